//! Lenient JSON readers for OMA's two JSON mappings.
//!
//! OMA's 2012 instance-based mapping writes every leaf as a string (`"duration": "60"`,
//! `"successReport": "true"`) and a repeated element that occurs once as a single value rather
//! than an array. Real clients send both shapes, so generated types read them all, and always
//! write the structure-aware form (native numbers and booleans, arrays for lists).

use serde::de::{self, Deserialize, Deserializer};

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum BoolLike {
    Bool(bool),
    Text(String),
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum IntLike {
    Int(i64),
    /// `3600.0`, `1e3`: what a client whose numbers are doubles writes (Jackson for a
    /// `Double`, Python's `float`, .NET's `double`); taken when the value is whole.
    Float(f64),
    Text(String),
}

fn bool_from<E: de::Error>(v: BoolLike) -> Result<bool, E> {
    match v {
        BoolLike::Bool(b) => Ok(b),
        BoolLike::Text(s) => match s.trim() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(E::custom(format!(
                "`{other}` is not a boolean (true or false)"
            ))),
        },
    }
}

fn int_from<E: de::Error>(v: IntLike) -> Result<i64, E> {
    let not = |shown: &dyn std::fmt::Display| E::custom(format!("`{shown}` is not an integer"));
    // A whole number past `i64` reached here as a double, rounded (`9223372036854775808` reads
    // `9223372036854775807` + 1 as `9223372036854776000`): not echoed as if the client had
    // sent that, but said to be out of range (an outside review).
    let too_large = || {
        E::custom(format!(
            "a number out of range: integers here are between {} and {}",
            i64::MIN,
            i64::MAX
        ))
    };
    let rejected = |f: f64| match f.is_finite() && f.fract() == 0.0 {
        true => too_large(),
        false => not(&f),
    };
    match v {
        IntLike::Int(i) => Ok(i),
        IntLike::Float(f) => whole(f).ok_or_else(|| rejected(f)),
        IntLike::Text(s) => {
            let t = s.trim();
            match (t.parse::<i64>(), t.parse::<f64>()) {
                (Ok(i), _) => Ok(i),
                (Err(_), Ok(f)) => {
                    whole(f).ok_or_else(|| match f.is_finite() && f.fract() == 0.0 {
                        true => E::custom(format!(
                            "`{s}` is out of range: integers here are between {} and {}",
                            i64::MIN,
                            i64::MAX
                        )),
                        false => not(&s),
                    })
                }
                (Err(_), Err(_)) => Err(not(&s)),
            }
        }
    }
}

/// `f` as an integer when it is one (`3600.0`, `1e3`), strictly within `i64`'s range; `None`
/// for a fraction, an infinity, NaN or a value out of range. `-2^63` itself is refused as a
/// double: integers just past `i64::MIN` round to it (`-9223372036854775809` reads as
/// `-2^63`), and `i64::MIN` written as an integer never comes this way.
fn whole(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; every f64 below it in magnitude converts exactly once whole.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && f > -LIMIT && f < LIMIT).then_some(f as i64)
}

/// A boolean, or a string holding one.
pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    bool_from(BoolLike::deserialize(d).map_err(|_: D::Error| expected("a boolean"))?)
}

/// The error of a value of the wrong JSON type, in the client's terms (serde's own names the
/// reader's internal enum: "did not match any variant of untagged enum IntLike").
fn expected<E: de::Error>(what: &str) -> E {
    E::custom(format!("expected {what}"))
}

/// An optional boolean, or a string holding one; `null` is absent.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Option::<BoolLike>::deserialize(d)
        .map_err(|_: D::Error| expected("a boolean"))?
        .map(bool_from)
        .transpose()
}

/// An integer, or a string holding one.
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    int_from(IntLike::deserialize(d).map_err(|_: D::Error| expected("an integer"))?)
}

/// An optional integer, or a string holding one; `null` is absent.
pub fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<IntLike>::deserialize(d)
        .map_err(|_: D::Error| expected("an integer"))?
        .map(int_from)
        .transpose()
}

/// Reads a JSON scalar as the text of a string field: a string as it is, a number or a
/// boolean as its JSON text (`12345`, `true`): clients that build JSON with a generic
/// XML-to-JSON converter type numeric-looking text (a `clientCorrelator` of `12345`), the
/// mirror of OMA's strings for numbers. Objects, arrays and `null` stay refused. A visitor,
/// not an untagged enum: every string field of every JSON body goes through it, and an
/// untagged enum would buffer each value before trying its variants.
struct TextVisitor;

impl<'de> de::Visitor<'de> for TextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// One string-field value ([`TextVisitor`]), for `Option` and lists.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor).map(Text)
    }
}

/// A string, or a number or boolean read as its JSON text ([`TextVisitor`]).
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(TextVisitor)
}

/// An optional string, or a number or boolean read as its JSON text; `null` is absent.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Text>::deserialize(d)?.map(|t| t.0))
}

/// A list of strings ([`one_or_many`]), each item a string, number or boolean.
pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(one_or_many::<D, Text>(d)?
        .into_iter()
        .map(|t| t.0)
        .collect())
}

/// A list: an array, a single value standing for a one-item list, or `null` for none.
///
/// Read through the deserializer it is given (a visitor, not a buffered `Value`), so that a
/// wrapper around it sees the items' keys too (`wire::read_json` tells a misspelt one inside
/// a `participant` entry) and an error says where in the body it is.
pub fn one_or_many<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    d.deserialize_any(OneOrMany(std::marker::PhantomData))
}

/// The visitor of [`one_or_many`]: a sequence is the list, `null` none, anything else one item.
struct OneOrMany<T>(std::marker::PhantomData<T>);

impl<T> OneOrMany<T> {
    /// A scalar standing for a one-item list, read as an item.
    fn one<'de, E: de::Error, V: de::IntoDeserializer<'de, E>>(v: V) -> Result<Vec<T>, E>
    where
        T: Deserialize<'de>,
    {
        T::deserialize(v.into_deserializer()).map(|t| vec![t])
    }
}

impl<'de, T: Deserialize<'de>> de::Visitor<'de> for OneOrMany<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list, or one item")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }

    fn visit_none<E: de::Error>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| vec![t])
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Vec<T>, E> {
        Self::one(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<T>, E> {
        Self::one(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<T>, E> {
        Self::one(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Vec<T>, E> {
        Self::one(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
        Self::one(v.to_owned())
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Vec<T>, E> {
        Self::one(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Vec<T>, E> {
        Self::one(v)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct T {
        #[serde(default, deserialize_with = "super::opt_bool")]
        b: Option<bool>,
        #[serde(default, deserialize_with = "super::opt_int")]
        n: Option<i64>,
        #[serde(default, deserialize_with = "super::one_or_many")]
        l: Vec<String>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct S {
        #[serde(deserialize_with = "super::string")]
        s: String,
        #[serde(default, deserialize_with = "super::opt_string")]
        o: Option<String>,
        #[serde(default, deserialize_with = "super::strings")]
        l: Vec<String>,
    }

    #[test]
    fn a_string_field_reads_a_number_or_boolean_as_its_text() {
        let s: S = serde_json::from_str(r#"{"s":12345,"o":true,"l":[1.5,"x",false]}"#).unwrap();
        assert_eq!(
            s,
            S {
                s: "12345".into(),
                o: Some("true".into()),
                l: vec!["1.5".into(), "x".into(), "false".into()]
            }
        );
        let n: S = serde_json::from_str(r#"{"s":"a","o":null,"l":7}"#).unwrap();
        assert_eq!((n.o, n.l), (None, vec!["7".to_owned()]));
        for bad in [
            r#"{"s":{}}"#,
            r#"{"s":[]}"#,
            r#"{"s":null}"#,
            r#"{"s":"a","o":{"x":1}}"#,
        ] {
            assert!(serde_json::from_str::<S>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_both_mappings() {
        let a: T = serde_json::from_str(r#"{"b":"true","n":"60","l":"x"}"#).unwrap();
        let b: T = serde_json::from_str(r#"{"b":true,"n":60,"l":["x"]}"#).unwrap();
        assert_eq!(a, b);
        let c: T = serde_json::from_str(r#"{"l":null}"#).unwrap();
        assert_eq!(
            c,
            T {
                b: None,
                n: None,
                l: vec![]
            }
        );
        assert!(serde_json::from_str::<T>(r#"{"b":"yes"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"n":"6x"}"#).is_err());
        // A whole number written as a double is the integer; a fraction is not.
        for whole in [
            r#"{"n":3600.0}"#,
            r#"{"n":3.6e3}"#,
            r#"{"n":"3600.0"}"#,
            r#"{"n":" 3.6E3 "}"#,
        ] {
            let t: T = serde_json::from_str(whole).unwrap();
            assert_eq!(t.n, Some(3600), "{whole}");
        }
        for bad in [
            r#"{"n":"3600.5"}"#,
            r#"{"n":1e300}"#,
            r#"{"n":"NaN"}"#,
            r#"{"n":"inf"}"#,
        ] {
            assert!(serde_json::from_str::<T>(bad).is_err(), "{bad}");
        }
        // A wrong JSON type is told in the client's terms, not the reader's enum.
        let e = serde_json::from_str::<T>(r#"{"n":3600.5}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("`3600.5` is not an integer"), "{e}");
        // Past `i64`: out of range, never a rounded value the client did not send.
        for big in [
            r#"{"n":9223372036854775808}"#,
            r#"{"n":18446744073709551616}"#,
            r#"{"n":-10000000000000000000}"#,
            r#"{"n":-9223372036854775809}"#,
        ] {
            let e = serde_json::from_str::<T>(big).unwrap_err().to_string();
            assert!(e.starts_with("a number out of range"), "{big}: {e}");
            assert!(!e.contains("6000"), "{big}: {e}");
        }
        let e = serde_json::from_str::<T>(r#"{"n":"9223372036854775808"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("`9223372036854775808` is out of range"),
            "{e}"
        );
        let e = serde_json::from_str::<T>(r#"{"n":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("expected an integer"), "{e}");
        let e = serde_json::from_str::<T>(r#"{"b":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("expected a boolean"), "{e}");
    }
}
