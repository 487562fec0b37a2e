//! Property tests of playback tokens, which arrive in every viewer's URL path: parsing any
//! text never panics, a signed token parses back into the fields it was made of and
//! verifies, and any change to it (a character, the resource, the clock) is refused.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use sluice_cdn::token::TokenParts;
use sluice_cdn::{ClientNet, PlaybackKey, PlaybackSigner};

fn signer() -> PlaybackSigner {
    PlaybackSigner::new(
        PlaybackKey::new("k1", b"0123456789abcdef0123456789abcdef".to_vec()).unwrap(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics(token in "\\PC{0,260}", dotted in "[A-Za-z0-9_.-]{0,80}") {
        let _ = TokenParts::parse(&token);
        let _ = TokenParts::parse(&dotted);
        let _ = signer().verify("t/a", &token, 0, None);
        let _ = signer().verify("t/a", &dotted, 0, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn a_signed_token_round_trips_and_verifies(
        resource in "[A-Za-z0-9]{1,26}/[A-Za-z0-9]{1,26}",
        expires in 1u64..=u64::MAX,
        bound in any::<bool>(),
        octets in any::<[u8; 4]>(),
        prefix in 8u8..=32,
    ) {
        let s = signer();
        let ip = IpAddr::V4(Ipv4Addr::from(octets));
        let net: Option<ClientNet> = bound.then(|| format!("{ip}/{prefix}").parse().unwrap());
        let token = s.sign(&resource, expires, net.as_ref());
        let parts = TokenParts::parse(&token).unwrap();
        prop_assert_eq!(parts.kid, "k1");
        prop_assert_eq!(parts.expires, expires);
        let claims = s.verify(&resource, &token, expires - 1, Some(ip)).unwrap();
        prop_assert_eq!(claims.expires, expires);
        prop_assert_eq!(claims.client, net);
        // Expired at its expiry, and never valid for another resource.
        prop_assert!(s.verify(&resource, &token, expires, Some(ip)).is_err());
        let other = format!("{resource}x");
        prop_assert!(s.verify(&other, &token, expires - 1, Some(ip)).is_err());
    }

    #[test]
    fn any_single_change_is_refused(
        expires in 1_000u64..4_000_000_000,
        at in any::<prop::sample::Index>(),
        with in "[A-Za-z0-9_.-]",
    ) {
        let s = signer();
        let token = s.sign("t/a", expires, None);
        let i = at.index(token.len());
        let mut forged = token.clone();
        forged.replace_range(i..=i, &with);
        prop_assume!(forged != token);
        prop_assert!(s.verify("t/a", &forged, 0, None).is_err(), "{} accepted", forged);
    }
}
