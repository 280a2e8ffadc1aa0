//! Paging of list answers (issue 12 item 4: no list answers an unbounded body).
//!
//! Every list is walked in creation order. A page is "the first `limit` entries whose position
//! is greater than the cursor", where a position is a number that only grows with creation
//! order (a resource's `seq`, or a participant's place in its session). The cursor the client
//! sends back is the position of the last entry of the previous page, written in decimal: a
//! position, not a lookup, so it stays valid when that entry is gone, and an entry created
//! during the walk (a larger position) shows up on a later page.
//!
//! These are plain functions over iterators and slices so that the rules are unit-tested
//! without a server; the chat core feeds them its in-memory lists and builds views only for
//! the entries of the page.

use netapi_chat_api::Link;
use netapi_chat_runtime::ApiError;

/// The `rel` of the link to the next page (RFC 8288's registered relation).
pub const NEXT: &str = "next";

/// Most bytes of what varies in size that one page of any list carries ([`within`]): message
/// texts, sessions' rosters and subjects, dead letters' bodies. At most a few MiB of answer
/// even in XML with every character escaped, instead of 1,000 × the largest entry (a page of
/// 1,000 sessions of 100 participants was 24 MB of JSON, 30 MB of XML, for a 140-byte GET).
pub const PAGE_BYTES: usize = 512 * 1024;

/// What the client asked for: the page after `after` (the first page when `None`), at most
/// `limit` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub after: Option<u64>,
    pub limit: usize,
}

impl PageRequest {
    /// From the query parameters. `max_entries` was checked against the spec's bounds by the
    /// generated code (1-1000); anything below 1 is still read as 1 rather than trusted.
    /// A cursor that is not a decimal position is `400 SVC0002`.
    pub fn new(max_entries: i64, cursor: Option<&str>) -> Result<PageRequest, ApiError> {
        let limit = usize::try_from(max_entries.max(1)).unwrap_or(usize::MAX);
        let after = cursor.map(parse_cursor).transpose()?;
        Ok(PageRequest { after, limit })
    }
}

/// Reads a cursor: the decimal position the server wrote, nothing else (no sign, no spaces,
/// no leading zeros, so that one position has one spelling).
pub fn parse_cursor(cursor: &str) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::invalid_input(format!(
            "`cursor` {cursor:?} is not a cursor this server made; take it from the `next` link of the previous page"
        ))
    };
    if cursor.is_empty()
        || !cursor.bytes().all(|b| b.is_ascii_digit())
        || (cursor.len() > 1 && cursor.starts_with('0'))
    {
        return Err(bad());
    }
    cursor.parse::<u64>().map_err(|_| bad())
}

/// Writes a cursor (see [`parse_cursor`]).
pub fn cursor(position: u64) -> String {
    position.to_string()
}

/// One page: its entries, and the cursor of the next page when more entries follow.
#[derive(Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<u64>,
}

/// The page of `entries` (position, entry), which must come in increasing position order:
/// entries at or before `req.after` are skipped, then at most `req.limit` are taken, and one
/// more is looked at (not built) to tell whether a next page exists. Only the page's entries
/// are collected, whatever the length of the list.
pub fn page<T>(entries: impl IntoIterator<Item = (u64, T)>, req: PageRequest) -> Page<T> {
    let mut rest = entries
        .into_iter()
        .skip_while(|(pos, _)| req.after.is_some_and(|after| *pos <= after));
    let mut items = Vec::with_capacity(req.limit.min(64));
    let mut last = None;
    for (pos, item) in rest.by_ref().take(req.limit) {
        items.push(item);
        last = Some(pos);
    }
    let next = match (last, rest.next()) {
        (Some(last), Some(_)) => Some(last),
        _ => None,
    };
    Page { items, next }
}

/// `p` ended early once its entries' `weight` passed `budget` (the entry that passes it is the
/// last one kept; the first one always is), with the next page starting after the last one
/// kept: a page's size in bytes is bounded as well as its count, so that 1,000 long messages
/// do not make one 20 MB answer (held for as long as its client takes to read it).
pub fn within<T>(
    mut p: Page<T>,
    budget: usize,
    weight: impl Fn(&T) -> usize,
    position: impl Fn(&T) -> u64,
) -> Page<T> {
    let mut total = 0usize;
    let keep = p.items.iter().position(|item| {
        total = total.saturating_add(weight(item));
        total >= budget
    });
    if let Some(last) = keep
        && last + 1 < p.items.len()
    {
        p.items.truncate(last + 1);
        p.next = p.items.last().map(&position);
    }
    p
}

/// The URL of the next page of the list at `list_url`.
pub fn next_url(list_url: &str, req: PageRequest, next: u64) -> String {
    format!(
        "{list_url}?maxEntries={}&cursor={}",
        req.limit,
        cursor(next)
    )
}

/// The body's `link` element for the next page, if any.
pub fn next_links(list_url: &str, req: PageRequest, next: Option<u64>) -> Vec<Link> {
    next.map(|n| Link {
        rel: NEXT.to_owned(),
        href: next_url(list_url, req, n),
    })
    .into_iter()
    .collect()
}

/// The HTTP `Link` header (RFC 8288) carrying the same next-page URL as the body's `link`.
pub fn link_header(links: &[Link]) -> Option<String> {
    links
        .iter()
        .find(|l| l.rel == NEXT)
        .map(|l| format!("<{}>; rel=\"{NEXT}\"", l.href))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page ends early at its byte budget, with a next cursor after its last entry; one
    /// within the budget, or cut by its count already, is left as it is.
    #[test]
    fn a_page_ends_at_its_byte_budget() {
        let req = PageRequest {
            after: None,
            limit: 10,
        };
        let entries = || (1u64..=6).map(|i| (i, (i, 100usize)));
        let cut = within(page(entries(), req), 250, |e| e.1, |e| e.0);
        assert_eq!(cut.items.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(cut.next, Some(3));
        let whole = within(page(entries(), req), 10_000, |e| e.1, |e| e.0);
        assert_eq!((whole.items.len(), whole.next), (6, None));
        // The first entry always goes, however large.
        let one = within(page(entries(), req), 1, |e| e.1, |e| e.0);
        assert_eq!((one.items.len(), one.next), (1, Some(1)));
        // Cut by its count, its next cursor stays.
        let small = PageRequest {
            after: None,
            limit: 2,
        };
        let counted = within(page(entries(), small), 10_000, |e| e.1, |e| e.0);
        assert_eq!((counted.items.len(), counted.next), (2, Some(2)));
    }

    fn req(after: Option<u64>, limit: usize) -> PageRequest {
        PageRequest { after, limit }
    }

    fn numbered(positions: &[u64]) -> Vec<(u64, u64)> {
        positions.iter().map(|&p| (p, p)).collect()
    }

    #[test]
    fn the_first_page_takes_the_first_entries_and_says_where_to_go_on() {
        let p = page(numbered(&[1, 2, 5, 9]), req(None, 2));
        assert_eq!(p.items, vec![1, 2]);
        assert_eq!(p.next, Some(2));
    }

    #[test]
    fn the_last_page_has_no_next_even_when_it_is_exactly_full() {
        assert_eq!(page(numbered(&[1, 2, 5]), req(Some(2), 1)).next, None);
        let p = page(numbered(&[1, 2, 5]), req(Some(2), 5));
        assert_eq!((p.items, p.next), (vec![5], None));
        let empty = page(numbered(&[]), req(None, 3));
        assert_eq!((empty.items, empty.next), (vec![], None));
    }

    #[test]
    fn a_walk_yields_every_entry_once_in_order() {
        let all: Vec<u64> = (1..=23).map(|i| i * 3).collect();
        for limit in 1..=25 {
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let p = page(numbered(&all), req(after, limit));
                assert!(p.items.len() <= limit);
                seen.extend(p.items);
                match p.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            assert_eq!(seen, all, "limit {limit}");
        }
    }

    #[test]
    fn a_cursor_is_a_position_not_a_lookup() {
        // The entry at 5 was the last of the previous page and is gone now.
        let p = page(numbered(&[1, 2, 7, 9]), req(Some(5), 10));
        assert_eq!(p.items, vec![7, 9]);
        // A cursor past the end is an empty last page.
        let p = page(numbered(&[1, 2]), req(Some(100), 10));
        assert_eq!((p.items, p.next), (vec![], None));
    }

    #[test]
    fn a_page_of_a_long_list_stops_one_entry_after_the_page() {
        let pulled = std::cell::Cell::new(0u64);
        let entries = (1..=1_000_000u64).map(|i| {
            pulled.set(pulled.get() + 1);
            (i, i)
        });
        let p = page(entries, req(Some(10), 3));
        assert_eq!(p.items, vec![11, 12, 13]);
        assert_eq!(p.next, Some(13));
        // 1..=11 skipped up to the first entry of the page, 11..=13 taken, 14 looked at.
        assert_eq!(pulled.get(), 14);
    }

    #[test]
    fn cursors_round_trip_and_anything_else_is_refused() {
        for n in [0, 1, 42, u64::MAX] {
            assert_eq!(parse_cursor(&cursor(n)).ok(), Some(n));
        }
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "01",
            "x",
            "1e3",
            "18446744073709551616",
        ] {
            let e = parse_cursor(bad)
                .err()
                .map(|e| (e.status.as_u16(), e.message_id));
            assert_eq!(e, Some((400, "SVC0002")), "{bad:?}");
        }
    }

    #[test]
    fn the_request_reads_its_parameters() {
        assert_eq!(PageRequest::new(100, None).ok(), Some(req(None, 100)));
        assert_eq!(PageRequest::new(7, Some("12")).ok(), Some(req(Some(12), 7)));
        assert_eq!(PageRequest::new(0, None).ok(), Some(req(None, 1)));
        assert!(PageRequest::new(10, Some("abc")).is_err());
    }

    #[test]
    fn the_next_link_is_in_the_body_and_the_header() {
        let links = next_links("http://h/v1/chat/u/messages", req(Some(3), 50), Some(77));
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].rel, "next");
        assert_eq!(
            links[0].href,
            "http://h/v1/chat/u/messages?maxEntries=50&cursor=77"
        );
        assert_eq!(
            link_header(&links).as_deref(),
            Some("<http://h/v1/chat/u/messages?maxEntries=50&cursor=77>; rel=\"next\"")
        );
        assert!(next_links("u", req(None, 5), None).is_empty());
        assert_eq!(link_header(&[]), None);
    }
}
