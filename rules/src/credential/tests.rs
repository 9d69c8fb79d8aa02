use super::{Rejected, Source, hex, parse_digest, sha256};
use crate::request::Request;

fn request(path: &str, headers: &[(&str, &str)]) -> Request {
    let mut request = Request {
        path: path.to_owned(),
        ..Request::default()
    };
    for (name, value) in headers {
        request
            .headers
            .insert((*name).to_owned(), (*value).to_owned());
    }
    request
}

#[test]
fn digests_round_trip_through_hex() {
    let digest = sha256(b"abc");
    assert_eq!(
        hex(&digest),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(parse_digest(&hex(&digest).to_uppercase()), Some(digest));
    assert_eq!(parse_digest("abc"), None);
    assert_eq!(parse_digest(&"g".repeat(64)), None);
}

#[test]
fn a_scheme_is_case_insensitive_and_needs_a_space() {
    let source = Source::Header {
        name: "authorization".into(),
        scheme: Some("Bearer".into()),
    };
    let got = |value: &str| source.extract(&request("/", &[("authorization", value)]));
    assert_eq!(got("Bearer abc"), Ok("abc".to_owned()));
    assert_eq!(got("bearer   abc "), Ok("abc".to_owned()));
    assert_eq!(
        got("Bearerabc"),
        Err(Rejected::Invalid("not a Bearer credential".into()))
    );
    assert_eq!(
        got("Basic abc"),
        Err(Rejected::Invalid("not a Bearer credential".into()))
    );
    assert_eq!(got("Bearer "), Err(Rejected::Missing));
    assert_eq!(source.extract(&request("/", &[])), Err(Rejected::Missing));
}
