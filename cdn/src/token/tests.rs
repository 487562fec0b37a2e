use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn signer() -> PlaybackSigner {
    PlaybackSigner::new(PlaybackKey::new("k1", SECRET).unwrap())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// The literals below were computed once and cross-checked outside Rust:
//
//   S=0123456789abcdef0123456789abcdef
//   b64u() { basenc --base64url | tr -d '=\n'; }
//   printf 'play2:k1:t1/a1:1700000000:_' \
//     | openssl dgst -sha256 -hmac "$S" -binary | head -c 16 | b64u
//   # bJ1Pj9uHZ5MdtRlKms-tiQ
//   SC=$(printf '203.0.113.0/24' | b64u)   # MjAzLjAuMTEzLjAvMjQ
//   printf "play2:k1:t1/a1:1700000000:$SC" \
//     | openssl dgst -sha256 -hmac "$S" -binary | head -c 16 | b64u
//   # SbT5pJbO6jMXh5P3tIRMkw
//   SC6=$(printf '2001:db8::/48' | b64u)   # MjAwMTpkYjg6Oi80OA
//   printf "play2:k1:t1/a1:1700000000:$SC6" \
//     | openssl dgst -sha256 -hmac "$S" -binary | head -c 16 | b64u
//   # 1_9uxnVDiksj4vfO755D9w
#[test]
fn exact_tokens() {
    let s = signer();
    assert_eq!(
        signed_string("k1", "t1/a1", 1_700_000_000, "_"),
        "play2:k1:t1/a1:1700000000:_"
    );
    assert_eq!(
        s.sign("t1/a1", 1_700_000_000, None),
        "k1.1700000000._.bJ1Pj9uHZ5MdtRlKms-tiQ"
    );
    // Host bits are cleared before signing: 203.0.113.7/24 is 203.0.113.0/24.
    let net: ClientNet = "203.0.113.7/24".parse().unwrap();
    assert_eq!(net.to_string(), "203.0.113.0/24");
    assert_eq!(
        s.sign("t1/a1", 1_700_000_000, Some(&net)),
        "k1.1700000000.MjAzLjAuMTEzLjAvMjQ.SbT5pJbO6jMXh5P3tIRMkw"
    );
    let net6: ClientNet = "2001:db8::/48".parse().unwrap();
    assert_eq!(
        s.sign("t1/a1", 1_700_000_000, Some(&net6)),
        "k1.1700000000.MjAwMTpkYjg6Oi80OA.1_9uxnVDiksj4vfO755D9w"
    );
}

#[test]
fn round_trip_and_expiry() {
    let s = signer();
    let t = s.sign("t1/a1", 1_700_000_000, None);
    assert_eq!(
        s.verify("t1/a1", &t, 1_699_999_999, None),
        Ok(Claims {
            expires: 1_700_000_000,
            client: None
        })
    );
    assert_eq!(
        s.verify("t1/a1", &t, 1_700_000_000, None),
        Err(Error::Expired)
    );
}

#[test]
fn refuses_other_resource_tampering_and_other_keys() {
    let s = signer();
    let t = s.sign("t1/a1", 100, None);
    assert_eq!(s.verify("t1/a2", &t, 50, None), Err(Error::BadSignature));
    assert_eq!(s.verify("t2/a1", &t, 50, None), Err(Error::BadSignature));
    let extended = t.replacen(".100.", ".200.", 1);
    assert_eq!(
        s.verify("t1/a1", &extended, 50, None),
        Err(Error::BadSignature)
    );
    // Same secret under another id: the id is signed too.
    let renamed = PlaybackSigner::new(PlaybackKey::new("k2", SECRET).unwrap());
    assert_eq!(
        renamed.verify("t1/a1", &t, 50, None),
        Err(Error::UnknownKey)
    );
    let t2 = renamed.sign("t1/a1", 100, None);
    let relabelled = t2.replacen("k2.", "k1.", 1);
    assert_eq!(
        s.verify("t1/a1", &relabelled, 50, None),
        Err(Error::BadSignature)
    );
    let other = PlaybackSigner::new(PlaybackKey::new("k1", b"another secret, 16+ bytes").unwrap());
    assert_eq!(
        other.verify("t1/a1", &t, 50, None),
        Err(Error::BadSignature)
    );
    // A bound token cannot be made unbound, nor widened.
    let net: ClientNet = "203.0.113.7".parse().unwrap();
    let bound = s.sign("t1/a1", 100, Some(&net));
    let scope = net.scope_field();
    let unbound = bound.replacen(&scope, "_", 1);
    assert_eq!(
        s.verify("t1/a1", &unbound, 50, Some(ip("198.51.100.1"))),
        Err(Error::BadSignature)
    );
    let wider = "0.0.0.0/0".parse::<ClientNet>().unwrap().scope_field();
    assert_eq!(
        s.verify(
            "t1/a1",
            &bound.replacen(&scope, &wider, 1),
            50,
            Some(ip("1.2.3.4"))
        ),
        Err(Error::BadSignature)
    );
}

#[test]
fn client_binding() {
    let s = signer();
    let host: ClientNet = "203.0.113.7".parse().unwrap();
    assert_eq!(host.to_string(), "203.0.113.7/32");
    let t = s.sign("t/a", 100, Some(&host));
    assert_eq!(
        s.verify("t/a", &t, 50, Some(ip("203.0.113.7"))),
        Ok(Claims {
            expires: 100,
            client: Some(host)
        })
    );
    // An IPv4-mapped IPv6 peer (a dual-stack listener) is its IPv4 address.
    assert!(
        s.verify("t/a", &t, 50, Some(ip("::ffff:203.0.113.7")))
            .is_ok()
    );
    assert_eq!(
        s.verify("t/a", &t, 50, Some(ip("203.0.113.8"))),
        Err(Error::ClientNotAllowed)
    );
    assert_eq!(s.verify("t/a", &t, 50, None), Err(Error::ClientNotAllowed));
    // Expiry is judged before the client.
    assert_eq!(
        s.verify("t/a", &t, 100, Some(ip("203.0.113.8"))),
        Err(Error::Expired)
    );
    let net: ClientNet = "2001:db8::/48".parse().unwrap();
    let t = s.sign("t/a", 100, Some(&net));
    assert!(
        s.verify("t/a", &t, 50, Some(ip("2001:db8:0:ffff::1")))
            .is_ok()
    );
    assert_eq!(
        s.verify("t/a", &t, 50, Some(ip("2001:db9::1"))),
        Err(Error::ClientNotAllowed)
    );
    assert_eq!(
        s.verify("t/a", &t, 50, Some(ip("127.0.0.1"))),
        Err(Error::ClientNotAllowed)
    );
    let v6host: ClientNet = "2001:db8::1".parse().unwrap();
    assert_eq!(v6host.to_string(), "2001:db8::1/128");
}

#[test]
fn client_net_parsing() {
    for good in [
        "127.0.0.1",
        "10.0.0.0/8",
        "::1",
        "2001:db8::/32",
        "0.0.0.0/0",
    ] {
        assert!(good.parse::<ClientNet>().is_ok(), "{good}");
    }
    let long = "1".repeat(10_000);
    for bad in [
        "",
        "localhost",
        "10.0.0.0/33",
        "10.0.0.0/",
        "/8",
        "1.2.3",
        " 1.2.3.4",
        "::/129",
        "1.2.3.4/8/8",
        long.as_str(),
    ] {
        let e = bad.parse::<ClientNet>().unwrap_err();
        assert!(matches!(e, Error::InvalidClientIp(_)), "{bad:?}");
        assert!(e.to_string().len() < 200);
    }
}

#[test]
fn rotation_overlap_window() {
    let old = PlaybackSigner::new(PlaybackKey::new("k1", SECRET).unwrap());
    let t_old = old.sign("t/a", 1_000, None);
    let new = PlaybackSigner::new(PlaybackKey::new("k2", b"the new key's secret text").unwrap())
        .with_previous(PlaybackKey::new("k1", SECRET).unwrap(), 500)
        .unwrap();
    assert_eq!(new.active_key_id(), "k2");
    assert!(new.sign("t/a", 1_000, None).starts_with("k2.1000._."));
    // The previous key verifies until its verify-until time, then is refused.
    assert!(new.verify("t/a", &t_old, 499, None).is_ok());
    assert_eq!(new.verify("t/a", &t_old, 500, None), Err(Error::UnknownKey));
    // The new key's tokens verify after that.
    let t_new = new.sign("t/a", 1_000, None);
    assert!(new.verify("t/a", &t_new, 900, None).is_ok());
    // An old signer does not know the new key.
    assert_eq!(old.verify("t/a", &t_new, 10, None), Err(Error::UnknownKey));
    // One id twice: refused.
    let dup = PlaybackSigner::new(PlaybackKey::new("k1", SECRET).unwrap())
        .with_previous(PlaybackKey::new("k1", SECRET).unwrap(), 9);
    assert_eq!(dup.unwrap_err(), Error::DuplicateKeyId("k1".into()));
    let listed: Vec<_> = new.keys().map(|(k, u)| (k.id(), u)).collect();
    assert_eq!(listed, [("k2", None), ("k1", Some(500))]);
}

#[test]
fn key_validation_and_redaction() {
    assert!(PlaybackKey::new("k1", SECRET).is_ok());
    assert!(PlaybackKey::new("A_b-9", SECRET).is_ok());
    assert!(PlaybackKey::new("0123456789abcdef", SECRET).is_ok());
    for bad in ["", "k.1", "k:1", "k/1", "0123456789abcdefg", "ké"] {
        assert!(
            matches!(PlaybackKey::new(bad, SECRET), Err(Error::InvalidKeyId(_))),
            "{bad:?}"
        );
    }
    assert_eq!(
        PlaybackKey::new("k1", b"short".to_vec()).unwrap_err(),
        Error::WeakSecret("k1".into())
    );
    let dbg = format!("{:?}", signer());
    assert!(!dbg.contains("0123456789abcdef"), "{dbg}");
    assert!(dbg.contains("redacted"));
}

#[test]
fn malformed_tokens_of_any_shape_are_refused_without_panicking() {
    let s = signer();
    let good = s.sign("t/a", 100, None);
    let mut nasty: Vec<String> = [
        "",
        ".",
        "...",
        "....",
        "k1...",
        "k1.100._.",
        "k1.100..AAAAAAAAAAAAAAAAAAAAAA",
        ".100._.AAAAAAAAAAAAAAAAAAAAAA",
        "k1..AAAAAAAAAAAAAAAAAAAAAA",
        "k1.-100._.AAAAAAAAAAAAAAAAAAAAAA",
        "k1.+100._.AAAAAAAAAAAAAAAAAAAAAA",
        "k1.99999999999999999999._.AAAAAAAAAAAAAAAAAAAAAA",
        "k1.184467440737095516160._.AAAAAAAAAAAAAAAAAAAAAA",
        "k1.100._.AAAAAAAAAAAAAAAAAAAAA",
        "k1.100._.AAAAAAAAAAAAAAAAAAAAAAA",
        "k1.100._.AAAAAAAAAAAAAAAAAAAAA=",
        "k1.100._.AAAAAAAAAAAAAAAAAAAAA+",
        "k1.100._.AAAAAAAAAAAAAAAAAAAAAB",
        "k1.100.%.AAAAAAAAAAAAAAAAAAAAAA",
        "k1.100._.AAAAAAAAAAAAAAAAAAAAAA.",
        "k1.100._.AAAAAAAAAAAAAAAAAAAAAA.x",
        "0123456789abcdefg.100._.AAAAAAAAAAAAAAAAAAAAAA",
        "k\u{e9}.100._.AAAAAAAAAAAAAAAAAAAAAA",
        "k1.١٠٠._.AAAAAAAAAAAAAAAAAAAAAA",
        "1700000000-bJ1Pj9uHZ5MdtRlKms-tiQ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    nasty.push(".".repeat(100_000));
    nasty.push("A".repeat(1 << 20));
    nasty.push(format!("k1.100.{}.AAAAAAAAAAAAAAAAAAAAAA", "A".repeat(300)));
    nasty.push(good.replace('.', ".."));
    nasty.push(format!("{good}\0"));
    nasty.push(good[..good.len() - 1].to_string());
    for t in &nasty {
        let r = s.verify("t/a", t, 50, Some(ip("127.0.0.1")));
        assert_eq!(r, Err(Error::Malformed), "{:?}", &t[..t.len().min(60)]);
    }
    // Every truncation and every single-byte change of a valid token is refused.
    let bound = s.sign("t/a", 100, Some(&"10.0.0.0/8".parse().unwrap()));
    for tok in [&good, &bound] {
        for i in 0..tok.len() {
            assert!(
                s.verify("t/a", &tok[..i], 50, Some(ip("10.1.1.1")))
                    .is_err()
            );
            for b in [b'.', b'A', b'_', b'-', b'0', b'/', 0xff] {
                let mut v = tok.as_bytes().to_vec();
                if v[i] == b {
                    continue;
                }
                v[i] = b;
                let t = String::from_utf8_lossy(&v);
                let r = s.verify("t/a", &t, 50, Some(ip("10.1.1.1")));
                // Changing a digit of the expiry may keep it well-formed: that is a bad
                // signature; anything else is malformed or unknown.
                assert!(r.is_err(), "{t}");
            }
        }
    }
    // Deterministic pseudo-random strings over the token alphabet.
    let alphabet = b"k1._-AZaz09+/=%\0";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 90) as usize;
        let t: String = (0..len)
            .map(|i| alphabet[((x >> (i % 60)) as usize + i) % alphabet.len()] as char)
            .collect();
        assert!(s.verify("t/a", &t, 50, None).is_err(), "{t}");
    }
}

/// The MAC fed piece by piece equals the MAC of the documented signed string, for expiries
/// of every width (the edge and other verifiers follow the documented string).
#[test]
fn piecewise_mac_is_the_mac_of_the_signed_string() {
    use hmac::Mac;
    let key = PlaybackKey::new("k-1_", b"0123456789abcdef0123456789abcdef".to_vec()).unwrap();
    for expires in [0, 7, 10, 99, 1_700_000_000, u64::MAX] {
        for scope in ["_", "MjAzLjAuMTEzLjAvMjQ"] {
            let whole = {
                let mut m = super::HmacSha256::new_from_slice(key.secret()).unwrap();
                m.update(signed_string("k-1_", "t/a", expires, scope).as_bytes());
                m.finalize().into_bytes()
            };
            assert_eq!(
                key.mac("t/a", expires, scope).finalize().into_bytes(),
                whole
            );
        }
    }
}
