//! Trusted proxies (`NETAPI_CHAT_TRUSTED_PROXIES`): behind a load balancer or a TLS-terminating
//! proxy every connection comes from the proxy's address, so per-address rules (the
//! authentication-failure limit) would count every client as one and one bad client would lock
//! everyone out. A request whose connection comes from a trusted proxy is handled as coming
//! from the client address the proxy wrote into `X-Forwarded-For`; from anyone else the header
//! is ignored (a client cannot pose as another address).
//!
//! The rule ([`client_address`]) is the usual one (nginx `real_ip_recursive`, Express
//! `trust proxy`): walk `X-Forwarded-For` from the right, skipping addresses of trusted proxies;
//! the first one that is not is the client. A header that does not read keeps the connection's
//! address.

use dropshot::{ClientAddr, PeerAddr, RequestGate};
use http::{HeaderMap, Request};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A trusted network: an address and how many of its leading bits must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// `a.b.c.d`, `a.b.c.d/n`, an IPv6 address or `…/n`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Net> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Net { addr, prefix })
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A list of networks separated by commas or spaces; `Err` names the entry that does not read.
pub fn parse_list(text: &str) -> Result<Vec<Net>, String> {
    text.split([',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| Net::parse(t).ok_or_else(|| t.to_owned()))
        .collect()
}

/// The client a request came from: `peer` (the connection's address) unless it is a trusted
/// proxy, in which case the rightmost `X-Forwarded-For` address that is not a trusted proxy
/// (port 0: the address is what the limits count). Read from the right, entry by entry
/// ([`forwarded_ip`]; empty elements skipped, RFC 9110 §5.6.1): an entry that does not read
/// stops the walk there and keeps `peer`, and so does a list of trusted proxies only. What a
/// client wrote left of the entry its proxy added is never read, so a client cannot make its
/// requests count as the proxy's (which would lock out everyone behind it).
pub fn client_address(peer: SocketAddr, headers: &HeaderMap, trusted: &[Net]) -> SocketAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer.ip()) {
        return peer;
    }
    // Every X-Forwarded-For header, in order, as one list (RFC 9110 §5.3).
    let fields: Vec<&str> = match headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str())
        .collect()
    {
        Ok(fields) => fields,
        Err(_) => return peer,
    };
    for entry in fields
        .iter()
        .rev()
        .flat_map(|f| f.rsplit(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        match forwarded_ip(entry) {
            Some(ip) if is_trusted(ip) => continue,
            Some(ip) => return SocketAddr::new(ip, 0),
            None => return peer,
        }
    }
    peer
}

/// The address of one `X-Forwarded-For` entry: an IP address, with or without a port
/// (`203.0.113.7:51234` and `[2001:db8::9]:443` are how Azure's gateways and others write
/// them), or a bracketed IPv6 address.
pub fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse::<std::net::Ipv6Addr>().ok())
                .map(IpAddr::V6)
        })
}

/// The request gate that hands dropshot the client address ([`client_address`]) of a request
/// that came through a trusted proxy, then runs `inner`.
pub fn trusting(inner: RequestGate, trusted: Arc<Vec<Net>>) -> RequestGate {
    Arc::new(move |request: &mut Request<hyper::body::Incoming>| {
        if let Some(PeerAddr(peer)) = request.extensions().get::<PeerAddr>().copied() {
            let client = client_address(peer, request.headers(), &trusted);
            if client != peer {
                request.extensions_mut().insert(ClientAddr(client));
            }
        }
        inner(request)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    /// Networks read as written, with or without a prefix; anything else names the entry.
    #[test]
    fn networks_read_and_contain_what_they_should() {
        let list = parse_list("10.0.0.0/8, 192.168.1.7 ::1,fd00::/8").unwrap();
        assert_eq!(list.len(), 4);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(list[0].contains(ip("10.200.3.4")) && !list[0].contains(ip("11.0.0.1")));
        assert!(list[1].contains(ip("192.168.1.7")) && !list[1].contains(ip("192.168.1.8")));
        assert!(list[1].contains(ip("::ffff:192.168.1.7")), "IPv4-mapped");
        assert!(list[2].contains(ip("::1")) && list[3].contains(ip("fd12::1")));
        assert!(Net::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0/8", "::1/129"] {
            assert_eq!(parse_list(bad), Err(bad.to_owned()), "{bad}");
        }
    }

    /// Only a trusted peer's header counts, read from the right past trusted proxies; a
    /// header that does not read, or holds only proxies, keeps the connection's address.
    #[test]
    fn the_client_is_the_rightmost_untrusted_forwarded_address() {
        let trusted = parse_list("127.0.0.1, 10.0.0.0/8").unwrap();
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let client = |peer, h: &[&str]| client_address(peer, &headers(h), &trusted).to_string();
        assert_eq!(client(proxy, &["198.51.100.1"]), "198.51.100.1:0");
        assert_eq!(
            client(proxy, &["6.6.6.6, 198.51.100.1, 10.1.2.3"]),
            "198.51.100.1:0",
            "a client's own claim left of the real one is not believed"
        );
        assert_eq!(
            client(proxy, &["6.6.6.6", "198.51.100.1"]),
            "198.51.100.1:0"
        );
        assert_eq!(client(stranger, &["198.51.100.1"]), "203.0.113.9:5000");
        assert_eq!(client(proxy, &["not an address"]), "127.0.0.1:5000");
        assert_eq!(client(proxy, &["10.0.0.1"]), "127.0.0.1:5000");
        assert_eq!(client(proxy, &[]), "127.0.0.1:5000");
        // Ports, as some proxies write them; empty elements; a client's own garbage left of
        // its proxy's entry does not make it the proxy.
        assert_eq!(client(proxy, &["198.51.100.1:51234"]), "198.51.100.1:0");
        assert_eq!(client(proxy, &["[2001:db8::9]:443"]), "[2001:db8::9]:0");
        assert_eq!(client(proxy, &["[2001:db8::9]"]), "[2001:db8::9]:0");
        assert_eq!(client(proxy, &["8.8.8.8, , "]), "8.8.8.8:0");
        assert_eq!(
            client(proxy, &["garbage, 198.51.100.1"]),
            "198.51.100.1:0",
            "what the client wrote is not read"
        );
        assert_eq!(client(proxy, &["198.51.100.1, nonsense"]), "127.0.0.1:5000");
        assert_eq!(
            client(proxy, &["198.51.100.1, 10.0.0.1:80"]),
            "198.51.100.1:0"
        );
    }
}
