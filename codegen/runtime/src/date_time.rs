//! RFC 3339 date-times (OMA's `xsd:dateTime`): the spec's `format: date-time` fields, read
//! without a date-time dependency. The server's readers of client-sent times (`lastActive`,
//! `since`, stored times) use [`parse`]; [`canonical`] is the spelling a date-time a client
//! sent is told to others in; [`DateTime`] is how such a field is published in the OpenAPI
//! document. The generated validation does not check the form: the other `format: date-time`
//! fields a client may send are set by the server, which ignores what it was sent.

use schemars::JsonSchema;
use schemars::r#gen::SchemaGenerator;
use schemars::schema::{InstanceType, Schema, SchemaObject};

/// Days since the epoch of a civil date (Howard Hinnant's days-from-civil; `m` 1-12).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads an RFC 3339 date-time (`2026-12-03T17:00:00Z`, `…T17:00:00.250+01:00`; `t`/`z` and a
/// space for `T` accepted, as RFC 3339 allows) as Unix milliseconds; `None` for anything else.
/// Client input: every field is range-checked (February 30 is refused), and to what XML
/// Schema's `xsd:dateTime` also takes, since what a client sends may be told to XML readers:
/// years from 0001, no leap second (`:60`), offsets within ±14:00.
pub fn parse(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, s) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let max_day = *month_days.get(usize::try_from(mo).ok()?.checked_sub(1)?)?;
    if y < 1 || d < 1 || d > max_day || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let mut at = 19;
    let mut ms = 0;
    if sep(at, b".") {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        // Milliseconds: the first three digits, the rest dropped.
        let first = b[at + 1..at + 1 + digits.min(3)].iter();
        ms = first.fold(0, |acc, c| acc * 10 + i64::from(c - b'0'))
            * 10_i64.pow(3 - u32::try_from(digits.min(3)).ok()?);
        at += 1 + digits;
    }
    let offset_min = match b.get(at..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == at + 6 && sep(at + 3, b":") => {
            let (oh, om) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if om > 59 || oh * 60 + om > 14 * 60 {
                return None;
            }
            let m = oh * 60 + om;
            if *sign == b'-' { -m } else { m }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60;
    secs.checked_mul(1000)?.checked_add(ms)
}

/// `text` (an RFC 3339 date-time as [`parse`] reads it) in the spelling every reader takes:
/// trimmed, `T` between date and time, `Z` for UTC. RFC 3339 allows `t`, `z` and a space;
/// XML Schema's `xsd:dateTime` and many date-time libraries do not. The value is unchanged
/// (the offset and fraction as given). `None` when `text` is no date-time.
pub fn canonical(text: &str) -> Option<String> {
    let text = text.trim();
    parse(text)?;
    Some(
        text.char_indices()
            .map(|(i, c)| match c {
                // The date/time separator: the 11th character of a date-time [`parse`] read.
                't' | ' ' if i == 10 => 'T',
                'z' => 'Z',
                c => c,
            })
            .collect(),
    )
}

/// The schema of a `format: date-time` field in the published OpenAPI document: a string
/// with that format, which a generated client (progenitor) types as a date-time. The field
/// is a `String` in the generated types (`#[schemars(with = ...)]`): the server reads and
/// writes the text.
pub struct DateTime;

impl JsonSchema for DateTime {
    fn schema_name() -> String {
        "DateTime".to_owned()
    }

    fn is_referenceable() -> bool {
        false
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        SchemaObject {
            instance_type: Some(InstanceType::String.into()),
            format: Some("date-time".to_owned()),
            ..Default::default()
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_times_are_read_and_nonsense_is_refused() {
        use super::parse as p;
        assert_eq!(p("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(p("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(p("2023-11-14t22:13:20.25z"), Some(1_700_000_000_250));
        assert_eq!(p("2023-11-14T22:13:20.123456Z"), Some(1_700_000_000_123));
        assert_eq!(p("2023-11-14T23:13:20+01:00"), Some(1_700_000_000_000));
        assert_eq!(p("2023-11-14T21:13:20-01:00"), Some(1_700_000_000_000));
        assert_eq!(p("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(p("2023-11-15T12:13:20+14:00"), Some(1_700_000_000_000));
        assert_eq!(p("2023-11-14T08:13:20-14:00"), Some(1_700_000_000_000));
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20+0100",
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20ZZ",
            "+023-11-14T22:13:20Z",
            "msg_12",
            "2023-11-14T22:13:20\u{e9}",
            // What `xsd:dateTime` refuses, though RFC 3339's grammar has room for it.
            "0000-01-01T00:00:00Z",
            "2026-12-03T12:34:60Z",
            "2026-12-03T12:00:00+14:01",
            "2026-12-03T12:00:00+15:00",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_canonical_spelling_keeps_the_value_and_takes_every_reader() {
        use super::canonical as c;
        assert_eq!(
            c("2023-11-14T22:13:20Z").as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(
            c(" 2023-11-14t22:13:20.25z ").as_deref(),
            Some("2023-11-14T22:13:20.25Z")
        );
        assert_eq!(
            c("2023-11-14 23:13:20+01:00").as_deref(),
            Some("2023-11-14T23:13:20+01:00")
        );
        assert_eq!(c("yesterday"), None);
    }
}
