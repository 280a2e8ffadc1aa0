//! Callbacks are not a way in: the SSRF policy for `notifyURL`s (issue 7, point 2).
//!
//! A client gives the server a `notifyURL`; the server later POSTs notifications to it from
//! inside the operator's network. Without a policy that turns the server into a proxy towards
//! loopback services, the cloud metadata endpoint (169.254.169.254) and the private network.
//! This module decides which callback targets are acceptable, in two steps:
//!
//! 1. [`check_url`], at subscription time and again at delivery time: the URL must be absolute
//!    `http`/`https` with a host and without credentials; a host written as an IP address is
//!    checked against the [`CallbackPolicy`] immediately; a DNS name is only checked for syntax
//!    (plus the special-use names `localhost` / `*.localhost` of RFC 6761, which always mean
//!    loopback), since resolving it is the next step's job.
//! 2. [`resolve_checked`], at delivery time (and optionally at subscription time): resolves the
//!    host and refuses the URL if **any** resolved address is refused, so a DNS name pointing at
//!    127.0.0.1 is refused just like the literal.
//!
//! # The caller must pin the addresses
//!
//! Checking the addresses and then letting the HTTP client resolve the name again would allow
//! DNS rebinding (the first answer is public, the second is 127.0.0.1). The notifier must
//! connect to exactly the addresses [`resolve_checked`] returned: `crate::notify::endpoints`
//! opens its TCP connections to those `SocketAddr`s itself (and keeps them alive only while
//! the answer is fresh), follows no redirect (a redirect would be a new, unchecked target) and
//! uses no proxy (with a proxy, the proxy resolves the name, not us).
//!
//! # What is refused
//!
//! See [`AddressClass`] for the classes and their ranges (IPv4 and IPv6). IPv6 addresses that
//! embed an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4
//! `2002:aabb:ccdd::`) are judged by the embedded IPv4 address; other IPv6 addresses outside
//! global unicast (`2000::/3`) are refused as reserved.
//!
//! # What the client is told
//!
//! A refused host gets one text, [`NOT_ALLOWED`], whether it is a literal private address, a
//! name that resolves to one, or a name that does not resolve at all (the `Display` of
//! [`GuardError`]): naming the resolved address, or telling unknown names apart, would make
//! subscription a DNS oracle for the operator's internal zone. The details (which address, which
//! class, the resolver's error) are for the operator's log: [`GuardError::detail`].
//!
//! Before any parsing, a URL holding a control character, whitespace or an invisible / bidi
//! format character is refused ([`forbidden_character`]): the URL parser would silently drop
//! CR/LF/tab, so the stored text and the URL used would differ, and the raw text would reach
//! log lines (log forging).
//!
//! [`CallbackPolicy`] can re-allow loopback (tests and local development) and private networks
//! (deployments whose receivers live on an internal network). Link-local (which holds the
//! cloud metadata services), unspecified (`0.0.0.0` reaches the local host on Linux),
//! multicast, broadcast, benchmarking, documentation and reserved addresses are refused always.

use crate::logsafe;
use reqwest::Url;
use std::fmt;

/// What a client is told about a callback host that is refused or unknown: the same words in
/// every case, with no address (see the module documentation), and what a callback needs, so
/// that a developer trying `localhost` learns why without the server's log.
pub const NOT_ALLOWED: &str = "notifyURL is not an allowed callback host (a callback needs a public address: loopback, private, link-local and reserved ones, and names that do not resolve, are refused unless the server allows them)";
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which callback targets are allowed besides public unicast addresses.
///
/// The default refuses everything but public addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallbackPolicy {
    /// Allow loopback targets (`127.0.0.0/8`, `::1`): for tests and local development.
    pub allow_loopback: bool,
    /// Allow private-network targets (`10/8`, `172.16/12`, `192.168/16`, `fc00::/7`, NAT64
    /// local-use `64:ff9b:1::/48`) and carrier-grade NAT space (`100.64/10`). Link-local stays
    /// refused even then: it holds the cloud metadata services.
    pub allow_private: bool,
}

impl CallbackPolicy {
    /// A policy that also allows loopback targets (tests, local development).
    pub fn allowing_loopback() -> CallbackPolicy {
        CallbackPolicy {
            allow_loopback: true,
            allow_private: false,
        }
    }

    /// Whether this policy allows an address of the given class.
    pub fn allows(&self, class: AddressClass) -> bool {
        match class {
            AddressClass::Loopback => self.allow_loopback,
            AddressClass::Private | AddressClass::SharedAddressSpace => self.allow_private,
            AddressClass::Unspecified
            | AddressClass::LinkLocal
            | AddressClass::Multicast
            | AddressClass::Broadcast
            | AddressClass::Benchmarking
            | AddressClass::Documentation
            | AddressClass::Reserved => false,
        }
    }

    /// Checks one address against the policy: `Ok` for a public address or an address of a
    /// class the policy re-allows, otherwise the refusal (without a host name; see
    /// [`GuardError::RefusedAddress`] for the client-facing form).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        match classify_detailed(ip) {
            Some((class, _)) if self.allows(class) => Ok(()),
            Some((class, embedded)) => Err(Refusal {
                addr: ip,
                class,
                embedded,
            }),
            None => Ok(()),
        }
    }
}

/// A class of address that is not public unicast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `0.0.0.0/8` ("this network"), `::`.
    Unspecified,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, `fc00::/7` (unique local),
    /// `64:ff9b:1::/48` (NAT64 local use).
    Private,
    /// `100.64.0.0/10`, the carrier-grade NAT shared address space (RFC 6598).
    SharedAddressSpace,
    /// `169.254.0.0/16` (including the cloud metadata address 169.254.169.254), `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `198.18.0.0/15`, `2001:2::/48` (RFC 2544 / RFC 5180 benchmarking).
    Benchmarking,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `240.0.0.0/4` (except broadcast), `192.0.0.0/24` (IETF protocol assignments),
    /// `192.88.99.0/24` (6to4 relay anycast); in IPv6 everything outside `2000::/3` not named
    /// above (IPv4-compatible `::a.b.c.d`, discard-only `100::/64`, site-local `fec0::/10`, …),
    /// Teredo `2001::/32` and ORCHID `2001:10::/28`.
    Reserved,
}

impl AddressClass {
    /// The class as a noun phrase with its article, for messages ("a loopback address").
    pub fn description(self) -> &'static str {
        match self {
            AddressClass::Loopback => "a loopback address",
            AddressClass::Unspecified => "an unspecified (\"this host\") address",
            AddressClass::Private => "a private-network address",
            AddressClass::SharedAddressSpace => {
                "a carrier-grade NAT (shared address space) address"
            }
            AddressClass::LinkLocal => {
                "a link-local address (the range of cloud metadata services)"
            }
            AddressClass::Multicast => "a multicast address",
            AddressClass::Broadcast => "the broadcast address",
            AddressClass::Benchmarking => "a benchmarking-network address",
            AddressClass::Documentation => "a documentation-only address",
            AddressClass::Reserved => "a reserved address",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// Why one address was refused (see [`CallbackPolicy::check_ip`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The address as given.
    pub addr: IpAddr,
    /// Its class.
    pub class: AddressClass,
    /// The IPv4 address embedded in an IPv6 `addr` that the class was taken from, if any.
    pub embedded: Option<Ipv4Addr>,
}

/// A `notifyURL` that may not be used as a callback target.
///
/// The `Display` text is written for the client developer who sent the URL: it becomes the
/// text of an OMA 400 error at subscription time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardError {
    /// A control character, whitespace or invisible format character in the URL text.
    ForbiddenCharacter {
        /// Its position, in characters from 1.
        position: usize,
        /// The character.
        character: char,
    },
    /// Not an absolute URL at all.
    Invalid {
        /// The URL parser's explanation.
        reason: String,
    },
    /// A scheme other than `http` / `https`.
    Scheme {
        /// The scheme as parsed (lowercase).
        scheme: String,
    },
    /// No host (e.g. `javascript:…`-style URLs that parse without one).
    NoHost,
    /// `user:password@` in the URL.
    Credentials,
    /// A port of a service that is not HTTP ([`is_bad_port`]), or port 0.
    Port {
        /// The port as written.
        port: u16,
    },
    /// The host is, or resolves to, an address the policy refuses.
    RefusedAddress {
        /// The host as written in the URL (IPv6 in brackets).
        host: String,
        /// The resolved address when `host` is a DNS name; `None` when `host` is the address.
        resolved: Option<IpAddr>,
        /// The class of the refused address.
        class: AddressClass,
        /// The IPv4 address embedded in an IPv6 address that the class was taken from.
        embedded: Option<Ipv4Addr>,
    },
    /// Name resolution failed.
    Unresolvable {
        /// The host as written in the URL.
        host: String,
        /// The resolver's explanation.
        reason: String,
    },
    /// Name resolution succeeded with no addresses.
    NoAddresses {
        /// The host as written in the URL.
        host: String,
    },
}

impl fmt::Display for GuardError {
    /// The client-facing text: [`NOT_ALLOWED`] for a refused, unresolvable or address-less
    /// host, otherwise what [`GuardError::detail`] says (it only repeats what the client wrote).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardError::RefusedAddress { .. }
            | GuardError::Unresolvable { .. }
            | GuardError::NoAddresses { .. } => f.write_str(NOT_ALLOWED),
            _ => Detail(self).fmt(f),
        }
    }
}

impl GuardError {
    /// The operator-facing text: names the resolved address, its class and the resolver's
    /// error. For logs only (escape it, see [`crate::logsafe`]), never for the client.
    pub fn detail(&self) -> impl fmt::Display + '_ {
        Detail(self)
    }
}

/// [`GuardError::detail`].
struct Detail<'a>(&'a GuardError);

impl fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            GuardError::ForbiddenCharacter {
                position,
                character,
            } => write!(
                f,
                "notifyURL contains a control character, whitespace or invisible character \
                 ({}) at character {position}; percent-encode it or remove it",
                character.escape_unicode()
            ),
            GuardError::Invalid { reason } => write!(
                f,
                "notifyURL is not a valid absolute URL ({reason}); \
                 use a full URL such as https://example.com/callback"
            ),
            GuardError::Scheme { scheme } => write!(
                f,
                "notifyURL scheme \"{scheme}\" is not allowed; callbacks must use http or https"
            ),
            GuardError::NoHost => write!(
                f,
                "notifyURL has no host; callbacks must name a public host, \
                 as in https://example.com/callback"
            ),
            GuardError::Credentials => write!(
                f,
                "notifyURL contains credentials (user:password@); \
                 credentials in a callback URL are refused, remove them"
            ),
            GuardError::Port { port } => write!(
                f,
                "notifyURL port {port} is not allowed: it is {}; callbacks must reach an HTTP \
                 port (e.g. 80, 443, 8080)",
                if *port == 0 {
                    "no port a server listens on"
                } else {
                    "the port of a service that is not HTTP (the Fetch standard's bad ports)"
                }
            ),
            GuardError::RefusedAddress {
                host,
                resolved,
                class,
                embedded,
            } => {
                write!(f, "notifyURL host {host} ")?;
                match resolved {
                    Some(addr) => write!(f, "resolves to {addr}, {class}")?,
                    None => write!(f, "is {class}")?,
                }
                if let Some(v4) = embedded {
                    write!(f, " (it embeds the IPv4 address {v4})")?;
                }
                write!(f, "; callbacks must reach a public host")
            }
            GuardError::Unresolvable { host, reason } => write!(
                f,
                "notifyURL host {host} could not be resolved ({reason}); \
                 callbacks must name a host with public DNS records"
            ),
            GuardError::NoAddresses { host } => write!(
                f,
                "notifyURL host {host} has no addresses; \
                 callbacks must name a host with public DNS records"
            ),
        }
    }
}

impl std::error::Error for GuardError {}

/// Checks a `notifyURL` without resolving it: absolute `http`/`https` URL with a host and no
/// credentials; an IP-literal host (in any form the URL standard accepts, e.g. `127.1` or
/// `0x7f000001`, which it normalizes) must be allowed by `policy`; `localhost` and
/// `*.localhost` count as loopback. Returns the parsed URL.
///
/// For a DNS name this is only half the check: [`resolve_checked`] must follow before any
/// connection is made.
pub fn check_url(url: &str, policy: &CallbackPolicy) -> Result<Url, GuardError> {
    if let Some((position, character)) = forbidden_character(url) {
        return Err(GuardError::ForbiddenCharacter {
            position,
            character,
        });
    }
    let parsed = Url::parse(url).map_err(|e| GuardError::Invalid {
        reason: e.to_string(),
    })?;
    check_syntax(&parsed)?;
    let host = host_str(&parsed)?;
    match host_ip(host) {
        Some(ip) => policy.check_ip(ip).map_err(|r| refused(host, None, r))?,
        None => {
            if is_localhost_name(host) && !policy.allows(AddressClass::Loopback) {
                return Err(GuardError::RefusedAddress {
                    host: host.to_owned(),
                    resolved: None,
                    class: AddressClass::Loopback,
                    embedded: None,
                });
            }
        }
    }
    Ok(parsed)
}

/// Resolves the URL's host and port (default 80 for `http`, 443 for `https`) and returns every
/// address, refusing the URL if **any** of them is refused by `policy` (a name with one public
/// and one loopback record is refused). The scheme and credential checks of [`check_url`] are
/// repeated, so this is safe to call on any `Url`.
///
/// The caller must connect to exactly these addresses (see the module documentation: delivery
/// opens its TCP connections to them itself, `notify::endpoints`), or a second resolution could
/// return a different answer (DNS rebinding). Resolution has no timeout of its own; wrap the
/// call in `tokio::time::timeout` to bound it.
pub async fn resolve_checked(
    url: &Url,
    policy: &CallbackPolicy,
) -> Result<Vec<SocketAddr>, GuardError> {
    check_syntax(url)?;
    let host = host_str(url)?;
    let port = url.port_or_known_default().ok_or(GuardError::NoHost)?;
    if let Some(ip) = host_ip(host) {
        policy.check_ip(ip).map_err(|r| refused(host, None, r))?;
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found =
        tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| GuardError::Unresolvable {
                host: host.to_owned(),
                reason: e.to_string(),
            })?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in found {
        policy
            .check_ip(addr.ip())
            .map_err(|r| refused(host, Some(addr.ip()), r))?;
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(GuardError::NoAddresses {
            host: host.to_owned(),
        });
    }
    Ok(addrs)
}

/// The first character (position from 1, and the character) that may not appear in a URL a
/// client gives: a control character (CR, LF, tab, NUL, ESC, C1, …), whitespace (a space must be
/// percent-encoded as `%20`), or a character the log escaping treats as invisible or reordering
/// (zero-width, bidi controls, line separators). `None` when the text is clean. The URL parser
/// would drop some of them silently (tab, CR, LF), so refusing them is the only way to keep the
/// URL used, the URL stored and the URL logged the same.
pub fn forbidden_character(url: &str) -> Option<(usize, char)> {
    url.chars()
        .enumerate()
        .find(|(_, c)| c.is_whitespace() || (*c != '\\' && logsafe::needs_escape(*c)))
        .map(|(i, c)| (i + 1, c))
}

fn refused(host: &str, resolved: Option<IpAddr>, r: Refusal) -> GuardError {
    GuardError::RefusedAddress {
        host: host.to_owned(),
        resolved,
        class: r.class,
        embedded: r.embedded,
    }
}

/// Scheme and credentials.
fn check_syntax(url: &Url) -> Result<(), GuardError> {
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(GuardError::Scheme {
                scheme: other.to_owned(),
            });
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(GuardError::Credentials);
    }
    if let Some(port) = url.port().filter(|&p| is_bad_port(p)) {
        return Err(GuardError::Port { port });
    }
    Ok(())
}

/// Whether a callback may not be sent to `port`: 0, or a port the Fetch standard blocks
/// (<https://fetch.spec.whatwg.org/#port-blocking>, as browsers do), the well-known ports of
/// services that are not HTTP (SMTP, IRC, LDAP, SIP…). A notification's body is client text,
/// and a line-based service on a public host would read its lines as commands sent from this
/// server's address; the address policy alone allows any port of a public host.
pub fn is_bad_port(port: u16) -> bool {
    /// The Fetch standard's list (2024), sorted for the binary search.
    const BAD: [u16; 83] = [
        0, 1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95,
        101, 102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179,
        389, 427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601,
        636, 989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566,
        6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080,
    ];
    BAD.binary_search(&port).is_ok()
}

fn host_str(url: &Url) -> Result<&str, GuardError> {
    match url.host_str() {
        Some(h) if !h.is_empty() => Ok(h),
        _ => Err(GuardError::NoHost),
    }
}

/// The address of an IP-literal host as `Url::host_str` renders it (IPv6 in brackets). The
/// URL parser has already normalized the IPv4 forms, so a DNS name never parses here.
fn host_ip(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// RFC 6761: `localhost` and names under it are loopback, whatever DNS says.
fn is_localhost_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

fn classify_detailed(ip: IpAddr) -> Option<(AddressClass, Option<Ipv4Addr>)> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4).map(|c| (c, None)),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, c, _] = ip.octets();
    let class = match (a, b, c) {
        (0, _, _) => AddressClass::Unspecified,
        (10, _, _) => AddressClass::Private,
        (100, 64..=127, _) => AddressClass::SharedAddressSpace,
        (127, _, _) => AddressClass::Loopback,
        (169, 254, _) => AddressClass::LinkLocal,
        (172, 16..=31, _) => AddressClass::Private,
        (192, 0, 0) => AddressClass::Reserved,
        (192, 0, 2) => AddressClass::Documentation,
        (192, 88, 99) => AddressClass::Reserved,
        (192, 168, _) => AddressClass::Private,
        (198, 18..=19, _) => AddressClass::Benchmarking,
        (198, 51, 100) => AddressClass::Documentation,
        (203, 0, 113) => AddressClass::Documentation,
        (224..=239, _, _) => AddressClass::Multicast,
        _ if ip == Ipv4Addr::BROADCAST => AddressClass::Broadcast,
        (240..=255, _, _) => AddressClass::Reserved,
        _ => return None,
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<(AddressClass, Option<Ipv4Addr>)> {
    let seg = ip.segments();
    let low32 = Ipv4Addr::from(ip.to_bits() as u32);
    let embedded = |v4: Ipv4Addr| classify_v4(v4).map(|c| (c, Some(v4)));
    let plain = |c: AddressClass| Some((c, None));
    if let Some(v4) = ip.to_ipv4_mapped() {
        // ::ffff:a.b.c.d
        return embedded(v4);
    }
    if ip == Ipv6Addr::UNSPECIFIED {
        return plain(AddressClass::Unspecified);
    }
    if ip == Ipv6Addr::LOCALHOST {
        return plain(AddressClass::Loopback);
    }
    match seg {
        // IPv4-compatible ::a.b.c.d (deprecated, RFC 4291).
        [0, 0, 0, 0, 0, 0, _, _] => plain(AddressClass::Reserved),
        // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052): judged by the IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => embedded(low32),
        // NAT64 local use 64:ff9b:1::/48 (RFC 8215).
        [0x64, 0xff9b, 1, ..] => plain(AddressClass::Private),
        // 6to4 2002::/16 (RFC 3056): the IPv4 address is in bits 16..48.
        [0x2002, hi, lo, ..] => embedded(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))),
        // Teredo 2001::/32.
        [0x2001, 0, ..] => plain(AddressClass::Reserved),
        [0x2001, 2, 0, ..] => plain(AddressClass::Benchmarking),
        // ORCHID 2001:10::/28 (RFC 4843, deprecated): not globally reachable (IANA's
        // special-purpose registry).
        [0x2001, s, ..] if s & 0xfff0 == 0x0010 => plain(AddressClass::Reserved),
        [0x2001, 0xdb8, ..] => plain(AddressClass::Documentation),
        [0x3fff, s, ..] if s & 0xf000 == 0 => plain(AddressClass::Documentation),
        [s, ..] if s & 0xfe00 == 0xfc00 => plain(AddressClass::Private),
        [s, ..] if s & 0xffc0 == 0xfe80 => plain(AddressClass::LinkLocal),
        [s, ..] if s & 0xff00 == 0xff00 => plain(AddressClass::Multicast),
        // Global unicast is 2000::/3; everything else not named above is not a place for
        // callbacks (discard-only 100::/64, site-local fec0::/10, unassigned space, …).
        [s, ..] if s & 0xe000 == 0x2000 => None,
        _ => plain(AddressClass::Reserved),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The class of an address, or `None` for a public unicast address (the detailed rule
    /// without the embedded address).
    fn classify(ip: IpAddr) -> Option<AddressClass> {
        classify_detailed(ip).map(|(class, _)| class)
    }

    fn deny() -> CallbackPolicy {
        CallbackPolicy::default()
    }

    fn loopback_ok() -> CallbackPolicy {
        CallbackPolicy::allowing_loopback()
    }

    fn private_ok() -> CallbackPolicy {
        CallbackPolicy {
            allow_loopback: false,
            allow_private: true,
        }
    }

    fn all_ok() -> CallbackPolicy {
        CallbackPolicy {
            allow_loopback: true,
            allow_private: true,
        }
    }

    fn class_of(url: &str, policy: &CallbackPolicy) -> Option<AddressClass> {
        match check_url(url, policy) {
            Err(GuardError::RefusedAddress { class, .. }) => Some(class),
            Err(other) => panic!("{url}: unexpected error {other}"),
            Ok(_) => None,
        }
    }

    /// Every URL is refused with `class` under the default policy, and under a policy that
    /// allows everything re-allowable exactly when `class` is re-allowable.
    fn assert_refused(class: AddressClass, urls: &[&str]) {
        for url in urls {
            assert_eq!(class_of(url, &deny()), Some(class), "{url}");
            let expect = if all_ok().allows(class) {
                None
            } else {
                Some(class)
            };
            assert_eq!(
                class_of(url, &all_ok()),
                expect,
                "{url} with everything allowed"
            );
        }
    }

    #[test]
    fn public_addresses_pass() {
        for url in [
            "http://93.184.215.14/cb",
            "https://8.8.8.8:8443/notify?x=1",
            "http://[2606:4700:4700::1111]/cb",
            "http://[2a00:1450:4001:82a::200e]:8080/",
            "https://example.com/callback",
            "http://100.63.255.255/",
            "http://100.128.0.1/",
            "http://172.15.255.255/",
            "http://172.32.0.1/",
            "http://198.17.255.255/",
            "http://198.20.0.1/",
            "http://223.255.255.255/",
            // NAT64 and 6to4 forms of a public IPv4 address.
            "http://[64:ff9b::808:808]/",
            "http://[2002:808:808::1]/",
        ] {
            let parsed = check_url(url, &deny()).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(parsed.scheme().starts_with("http"));
        }
    }

    #[test]
    fn loopback_refused_unless_allowed() {
        assert_refused(
            AddressClass::Loopback,
            &[
                "http://127.0.0.1/cb",
                "http://127.255.255.254:9000/",
                "http://[::1]/cb",
                "http://[::ffff:127.0.0.1]/cb",
                "http://[64:ff9b::7f00:1]/",
                "http://[2002:7f00:1::]/",
                // Forms the URL standard normalizes to 127.0.0.1.
                "http://127.1/",
                "http://2130706433/",
                "http://0x7f000001/",
                "http://0177.0.0.1/",
                "http://localhost:8080/cb",
                "http://LOCALHOST./",
                "http://api.localhost/",
            ],
        );
        for url in ["http://127.0.0.1:10/", "http://[::1]/", "http://localhost/"] {
            assert!(check_url(url, &loopback_ok()).is_ok(), "{url}");
            assert_eq!(class_of(url, &private_ok()), Some(AddressClass::Loopback));
        }
    }

    #[test]
    fn ports_of_other_services_are_refused_whatever_the_host() {
        for url in [
            "http://example.com:25/cb",
            "https://example.com:0/cb",
            "http://1.1.1.1:6667/",
            "http://127.0.0.1:9/",
            "http://[2606:4700::1111]:10080/",
        ] {
            assert!(
                matches!(check_url(url, &private_ok()), Err(GuardError::Port { .. })),
                "{url}"
            );
        }
        // The scheme's own port, written or not, and other HTTP ports.
        for url in [
            "http://example.com:80/cb",
            "https://example.com:443/cb",
            "http://example.com:8080/cb",
            "https://example.com:8443/cb",
            "http://example.com/cb",
        ] {
            assert!(check_url(url, &private_ok()).is_ok(), "{url}");
        }
        assert!(is_bad_port(0) && is_bad_port(1) && is_bad_port(10080));
        assert!(!is_bad_port(2) && !is_bad_port(80) && !is_bad_port(443) && !is_bad_port(65535));
    }

    #[test]
    fn unspecified_refused_always() {
        assert_refused(
            AddressClass::Unspecified,
            &[
                "http://0.0.0.0/",
                "http://0.1.2.3/",
                "http://0/",
                "http://[::]/",
                "http://[::ffff:0.0.0.0]/",
            ],
        );
    }

    #[test]
    fn private_refused_unless_allowed() {
        assert_refused(
            AddressClass::Private,
            &[
                "http://10.0.0.1/",
                "http://10.255.255.255/",
                "http://172.16.0.1/",
                "http://172.31.255.255/",
                "http://192.168.1.1/",
                "http://[fc00::1]/",
                "http://[fd12:3456:789a::1]/",
                "http://[::ffff:10.1.2.3]/",
                "http://[::ffff:192.168.0.1]/",
                "http://[64:ff9b::a00:1]/",
                "http://[64:ff9b:1::a00:1]/",
                "http://[2002:c0a8:101::]/",
            ],
        );
        assert!(check_url("http://192.168.1.1/", &private_ok()).is_ok());
        assert!(check_url("http://[fd00::1]/", &private_ok()).is_ok());
        assert_eq!(
            class_of("http://10.0.0.1/", &loopback_ok()),
            Some(AddressClass::Private)
        );
    }

    #[test]
    fn cgnat_refused_unless_private_allowed() {
        assert_refused(
            AddressClass::SharedAddressSpace,
            &[
                "http://100.64.0.1/",
                "http://100.127.255.255/",
                "http://[::ffff:100.64.0.1]/",
            ],
        );
        assert!(check_url("http://100.100.100.100/", &private_ok()).is_ok());
    }

    #[test]
    fn link_local_and_metadata_refused_always() {
        assert_refused(
            AddressClass::LinkLocal,
            &[
                "http://169.254.169.254/latest/meta-data/",
                "http://169.254.0.1/",
                "http://[fe80::1]/",
                "http://[febf::1]/",
                "http://[::ffff:169.254.169.254]/",
                "http://[::ffff:a9fe:a9fe]/",
                "http://[64:ff9b::a9fe:a9fe]/",
            ],
        );
    }

    #[test]
    fn multicast_and_broadcast_refused_always() {
        assert_refused(
            AddressClass::Multicast,
            &[
                "http://224.0.0.1/",
                "http://239.255.255.250/",
                "http://[ff02::1]/",
                "http://[ff0e::1]/",
                "http://[::ffff:224.0.0.251]/",
            ],
        );
        assert_refused(
            AddressClass::Broadcast,
            &[
                "http://255.255.255.255/",
                "http://[::ffff:255.255.255.255]/",
            ],
        );
    }

    #[test]
    fn benchmarking_documentation_reserved_refused_always() {
        assert_refused(
            AddressClass::Benchmarking,
            &[
                "http://198.18.0.1/",
                "http://198.19.255.255/",
                "http://[2001:2::1]/",
            ],
        );
        assert_refused(
            AddressClass::Documentation,
            &[
                "http://192.0.2.1/",
                "http://198.51.100.7/",
                "http://203.0.113.200/",
                "http://[2001:db8::1]/",
                "http://[3fff::1]/",
                "http://[::ffff:192.0.2.1]/",
            ],
        );
        assert_refused(
            AddressClass::Reserved,
            &[
                "http://240.0.0.1/",
                "http://254.1.2.3/",
                "http://192.0.0.192/",
                "http://192.88.99.1/",
                "http://[::7f00:1]/",
                "http://[100::1]/",
                "http://[fec0::1]/",
                "http://[2001::1]/",
                "http://[2001:10::1]/",
                "http://[2001:1f:ffff::1]/",
                "http://[4000::1]/",
            ],
        );
    }

    #[test]
    fn messages_are_actionable() {
        let msg = |url: &str| match check_url(url, &deny()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{url} accepted"),
        };
        let detail = |url: &str| match check_url(url, &deny()) {
            Err(e) => e.detail().to_string(),
            Ok(_) => panic!("{url} accepted"),
        };
        // The client hears only that the host is not allowed; the operator's detail says why.
        assert_eq!(msg("http://127.0.0.1/cb"), NOT_ALLOWED);
        assert_eq!(
            detail("http://127.0.0.1/cb"),
            "notifyURL host 127.0.0.1 is a loopback address; callbacks must reach a public host"
        );
        assert_eq!(msg("http://[::ffff:127.0.0.1]/cb"), NOT_ALLOWED);
        assert_eq!(
            detail("http://[::ffff:127.0.0.1]/cb"),
            "notifyURL host [::ffff:7f00:1] is a loopback address \
             (it embeds the IPv4 address 127.0.0.1); callbacks must reach a public host"
        );
        assert!(detail("http://169.254.169.254/").contains("metadata"));
        assert!(msg("ftp://example.com/").contains("\"ftp\" is not allowed"));
        assert!(msg("http://u:p@example.com/").contains("credentials"));
        assert!(msg("/relative/callback").contains("not a valid absolute URL"));
    }

    #[test]
    fn schemes_other_than_http_refused() {
        for (url, scheme) in [
            ("ftp://example.com/cb", "ftp"),
            ("file:///etc/passwd", "file"),
            ("javascript:alert(1)", "javascript"),
            ("gopher://example.com:70/", "gopher"),
            ("ws://example.com/", "ws"),
            ("data:text/plain,hi", "data"),
        ] {
            assert_eq!(
                check_url(url, &all_ok()),
                Err(GuardError::Scheme {
                    scheme: scheme.to_owned()
                }),
                "{url}"
            );
        }
        assert!(check_url("HTTPS://Example.COM/cb", &deny()).is_ok());
    }

    #[test]
    fn userinfo_refused() {
        for url in [
            "http://user:pass@example.com/",
            "http://user@example.com/",
            "https://:secret@example.com/",
            "http://example.com@127.0.0.1/",
        ] {
            assert_eq!(
                check_url(url, &all_ok()),
                Err(GuardError::Credentials),
                "{url}"
            );
        }
    }

    #[test]
    fn not_absolute_or_without_host_refused() {
        for url in ["", "/cb", "example.com/cb", "http://"] {
            assert!(
                matches!(check_url(url, &all_ok()), Err(GuardError::Invalid { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn classify_and_check_ip() {
        assert_eq!(classify(IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8))), None);
        assert_eq!(
            classify(IpAddr::V6(Ipv6Addr::new(0x3fff, 0x0fff, 0, 0, 0, 0, 0, 1))),
            Some(AddressClass::Documentation)
        );
        assert_eq!(
            classify(IpAddr::V6(Ipv6Addr::new(0x3fff, 0x1000, 0, 0, 0, 0, 0, 1))),
            None
        );
        assert_eq!(
            classify(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())),
            Some(AddressClass::Loopback)
        );
        let refusal = deny()
            .check_ip(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()))
            .err();
        assert_eq!(
            refusal.map(|r| (r.class, r.embedded)),
            Some((AddressClass::Private, Some(Ipv4Addr::new(10, 0, 0, 1))))
        );
    }

    #[tokio::test]
    async fn dns_name_resolving_to_loopback_refused_unless_allowed() {
        // Parsed directly (not through check_url, which refuses the name `localhost` by
        // itself) so that the refusal comes from the resolved addresses.
        let url = Url::parse("http://localhost:8080/cb").expect("valid test URL");
        match resolve_checked(&url, &deny()).await {
            Err(GuardError::RefusedAddress {
                host,
                resolved: Some(addr),
                class: AddressClass::Loopback,
                ..
            }) => {
                assert_eq!(host, "localhost");
                assert!(addr.is_loopback(), "{addr}");
            }
            other => panic!("expected a loopback refusal, got {other:?}"),
        }
        let addrs = resolve_checked(&url, &loopback_ok())
            .await
            .expect("localhost allowed");
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080)
        );
    }

    #[tokio::test]
    async fn resolve_checked_literals_and_default_ports() {
        let url = Url::parse("http://127.0.0.1/cb").expect("valid test URL");
        assert!(matches!(
            resolve_checked(&url, &deny()).await,
            Err(GuardError::RefusedAddress {
                resolved: None,
                class: AddressClass::Loopback,
                ..
            })
        ));
        assert_eq!(
            resolve_checked(&url, &loopback_ok()).await,
            Ok(vec!["127.0.0.1:80".parse().expect("addr")])
        );
        let url = Url::parse("https://[::1]/cb").expect("valid test URL");
        assert_eq!(
            resolve_checked(&url, &loopback_ok()).await,
            Ok(vec!["[::1]:443".parse().expect("addr")])
        );
        let url = Url::parse("https://93.184.215.14:8443/").expect("valid test URL");
        assert_eq!(
            resolve_checked(&url, &deny()).await,
            Ok(vec!["93.184.215.14:8443".parse().expect("addr")])
        );
        // The syntax checks are repeated for a Url that did not come through check_url.
        let url = Url::parse("ftp://93.184.215.14/").expect("valid test URL");
        assert!(matches!(
            resolve_checked(&url, &all_ok()).await,
            Err(GuardError::Scheme { .. })
        ));
        let url = Url::parse("http://a:b@93.184.215.14/").expect("valid test URL");
        assert_eq!(
            resolve_checked(&url, &all_ok()).await,
            Err(GuardError::Credentials)
        );
    }

    #[test]
    fn control_characters_and_whitespace_are_refused_before_parsing() {
        for (url, position, character) in [
            ("http://example.com/cb\r\nX-Forged: 1", 22, '\r'),
            ("http://example.com/a\nb", 21, '\n'),
            ("http://exa\tmple.com/", 11, '\t'),
            ("http://example.com/a b", 21, ' '),
            ("http://example.com/\u{0}", 20, '\u{0}'),
            ("http://example.com/\u{1b}[2J", 20, '\u{1b}'),
            ("http://example.com/\u{85}", 20, '\u{85}'),
            ("http://example.com/\u{2028}", 20, '\u{2028}'),
            ("http://example.com/\u{a0}", 20, '\u{a0}'),
            ("http://example.com/\u{202e}fdp", 20, '\u{202e}'),
            ("http://example.com/\u{200b}", 20, '\u{200b}'),
            (" http://example.com/", 1, ' '),
        ] {
            assert_eq!(
                forbidden_character(url),
                Some((position, character)),
                "{url:?}"
            );
            let e = check_url(url, &all_ok()).expect_err(url);
            assert_eq!(
                e,
                GuardError::ForbiddenCharacter {
                    position,
                    character
                },
                "{url:?}"
            );
            let text = e.to_string();
            assert!(character == ' ' || !text.contains(character), "{text:?}");
            assert!(text.contains("percent-encode"), "{text}");
        }
        for url in [
            "http://example.com/cb?a=%0D%0A&b=%20",
            "https://example.com/caf\u{e9}/\u{4e2d}",
            "http://example.com/a\\b",
        ] {
            assert_eq!(forbidden_character(url), None, "{url:?}");
        }
    }

    #[tokio::test]
    async fn refused_and_unknown_hosts_get_one_text_without_addresses() {
        // A literal private address, a literal loopback address, `localhost`, a name that
        // resolves to loopback (checked by resolution, as a DNS name), and a name that does
        // not exist: the client cannot tell them apart, and no address is named.
        let mut texts = Vec::new();
        for url in [
            "http://10.1.2.3/cb",
            "http://127.0.0.1/",
            "http://localhost/",
        ] {
            texts.push(check_url(url, &deny()).expect_err(url).to_string());
        }
        for url in ["http://localhost:8080/cb", "http://callback.invalid/"] {
            let parsed = Url::parse(url).expect("valid test URL");
            let e = resolve_checked(&parsed, &deny()).await.expect_err(url);
            texts.push(e.to_string());
            assert_ne!(
                e.detail().to_string(),
                NOT_ALLOWED,
                "the operator sees more"
            );
        }
        for text in &texts {
            assert_eq!(text, NOT_ALLOWED);
            assert!(
                !text.contains("127.0.0.1") && !text.contains("::1"),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn unresolvable_name_is_an_error() {
        // `.invalid` never resolves (RFC 6761).
        let url = Url::parse("http://callback.invalid/").expect("valid test URL");
        assert!(matches!(
            resolve_checked(&url, &all_ok()).await,
            Err(GuardError::Unresolvable { .. } | GuardError::NoAddresses { .. })
        ));
    }
}
