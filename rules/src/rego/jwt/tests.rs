use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

/// An HS256 token signed with `k` whose `pad` claim makes it `padding` bytes longer.
fn token(padding: usize) -> String {
    let claims = json!({ "sub": "ann", "pad": "x".repeat(padding) });
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(b"k"))
        .expect("encodes")
}

/// A token just under the cap and one just over it, both validly signed.
fn at_and_over_the_cap() -> (String, String) {
    let base = token(0).len();
    // Each 3 bytes of claim text are 4 base64url characters.
    let fitting = token((MAX_CREDENTIAL_BYTES - base) * 3 / 4 - 3);
    let over = token((MAX_CREDENTIAL_BYTES - base) * 3 / 4 + 3);
    assert!(fitting.len() <= MAX_CREDENTIAL_BYTES && over.len() > MAX_CREDENTIAL_BYTES);
    (fitting, over)
}

fn verify_constraints() -> Value {
    Value::from(json!({ "secret": "k" }))
}

#[test]
fn tokens_over_the_credential_cap_are_refused_by_every_builtin() {
    let (fitting, over) = at_and_over_the_cap();
    let args = |token: &str| vec![Value::from(token), Value::from("k")];

    assert!(decode(&[Value::from(fitting.as_str())]).is_ok());
    assert_eq!(
        verify(Algorithm::HS256, &args(&fitting)).expect("verifies"),
        Value::from(true)
    );
    let answer = decode_verify(&[Value::from(fitting.as_str()), verify_constraints()]);
    assert_eq!(answer.expect("answers")[0], Value::from(true));

    let error = decode(&[Value::from(over.as_str())]).expect_err("too long");
    assert_eq!(
        error.to_string(),
        "io.jwt.decode: token longer than 8192 bytes"
    );
    let error = verify(Algorithm::HS256, &args(&over)).expect_err("too long");
    assert_eq!(
        error.to_string(),
        "io.jwt.verify: token longer than 8192 bytes"
    );
    let answer = decode_verify(&[Value::from(over.as_str()), verify_constraints()]);
    assert_eq!(
        answer.expect("answers"),
        Value::from(vec![
            Value::from(false),
            Value::new_object(),
            Value::new_object()
        ])
    );
}
