//! Who the client is, for IP-bound playback tokens.
//!
//! The socket's peer address is the client, unless the peer is one of the configured
//! `gateway.trusted_proxies`: then the client is the right-most `X-Forwarded-For` hop, the
//! one that trusted proxy itself appended. Hops further left were written by whoever sent
//! the request and prove nothing, so they are never read. With no trusted proxies (the
//! default) the header is ignored entirely: a client cannot claim an address it does not
//! hold.

use std::net::{IpAddr, SocketAddr};

use http::Request;
use sluice_cdn::ClientNet;

/// The socket's peer address, put in each request's extensions by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The longest `X-Forwarded-For` value read; a longer one leaves the client unknown.
const MAX_XFF_LEN: usize = 8 * 1024;

/// The client's address, or `None` when it cannot be known (no peer address, or a trusted
/// proxy that sent no readable `X-Forwarded-For`). `None` fails IP-bound tokens.
pub fn client_ip<B>(req: &Request<B>, trusted: &[ClientNet]) -> Option<IpAddr> {
    let peer = req.extensions().get::<PeerAddr>()?.0.ip().to_canonical();
    if !trusted.iter().any(|n| n.contains(peer)) {
        return Some(peer);
    }
    let values = req.headers().get_all("x-forwarded-for");
    // Several header lines are one list, in order: the last line's last hop is right-most.
    let Some(last) = values.iter().next_back() else {
        return Some(peer);
    };
    if last.len() > MAX_XFF_LEN {
        return None;
    }
    let hop = last.to_str().ok()?.rsplit(',').next()?.trim();
    parse_hop(hop)
}

/// One hop: an IPv4 or IPv6 address, the latter possibly in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let bare = hop
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(hop);
    bare.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(peer: &str, xff: &[&str]) -> Request<()> {
        let mut b = Request::builder();
        for v in xff {
            b = b.header("x-forwarded-for", *v);
        }
        let mut r = b.body(()).unwrap();
        r.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
        r
    }

    fn nets(list: &[&str]) -> Vec<ClientNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_peer_unless_it_is_a_trusted_proxy() {
        // No trusted proxies: X-Forwarded-For is ignored.
        assert_eq!(
            client_ip(&req("198.51.100.7:5000", &["203.0.113.9"]), &[]),
            ip("198.51.100.7")
        );
        let trusted = nets(&["10.0.0.0/8", "::1"]);
        // An untrusted peer cannot claim another address.
        assert_eq!(
            client_ip(&req("198.51.100.7:5000", &["203.0.113.9"]), &trusted),
            ip("198.51.100.7")
        );
        // A trusted peer: the right-most hop, never one further left.
        assert_eq!(
            client_ip(&req("10.1.2.3:5000", &["1.1.1.1, 203.0.113.9"]), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(&req("10.1.2.3:5000", &["1.1.1.1", "203.0.113.9"]), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(&req("[::1]:5000", &["[2001:db8::5]"]), &trusted),
            ip("2001:db8::5")
        );
        // A trusted peer without the header is the client itself.
        assert_eq!(
            client_ip(&req("10.1.2.3:5000", &[]), &trusted),
            ip("10.1.2.3")
        );
        // An IPv4-mapped peer (dual-stack socket) counts as IPv4.
        assert_eq!(
            client_ip(&req("[::ffff:10.1.2.3]:5000", &["203.0.113.9"]), &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn unreadable_forwarded_for_leaves_the_client_unknown() {
        let trusted = nets(&["10.0.0.0/8"]);
        for bad in [
            "",
            "unknown",
            "1.1.1.1, ",
            "1.1.1.1:80",
            "300.1.1.1",
            "_hidden",
        ] {
            assert_eq!(
                client_ip(&req("10.0.0.1:1", &[bad]), &trusted),
                None,
                "{bad:?}"
            );
        }
        let long = format!("{}1.1.1.1", "9.9.9.9, ".repeat(2000));
        assert_eq!(client_ip(&req("10.0.0.1:1", &[&long]), &trusted), None);
        // No peer address at all (a request built in-process): unknown.
        let r = Request::builder().body(()).unwrap();
        assert_eq!(client_ip(&r, &trusted), None);
    }
}
