use serde_json::json;

use super::decision::map;
use super::input::parsed_path_and_query;
use crate::decision::Decision;

#[test]
fn parsed_path_and_query_follow_go_url_parse() {
    let (path, query) = parsed_path_and_query("/api/v1/products?a=1&a=2&b=x+y&c=%zz&d").unwrap();
    assert_eq!(path, json!(["api", "v1", "products"]));
    assert_eq!(query, json!({"a": ["1", "2"], "b": ["x y"], "d": [""]}));
    let (path, query) = parsed_path_and_query("/").unwrap();
    assert_eq!(path, json!([""]));
    assert_eq!(query, json!({}));
    let (path, _) = parsed_path_and_query("//people/a%20b%2Fc").unwrap();
    assert_eq!(path, json!(["a b", "c"]));
    assert!(parsed_path_and_query("/a%zz").is_err());
}

#[test]
fn booleans_and_objects_map_as_opa_envoy_maps_them() {
    assert!(matches!(map(&json!(true)), Ok(Decision::Allow(_))));
    let Ok(Decision::Deny(deny)) = map(&json!(false)) else {
        panic!()
    };
    assert_eq!(
        (deny.http_status, deny.grpc_code, deny.body.as_str()),
        (403, 7, "")
    );
    assert!(
        map(&json!({"headers": {}}))
            .unwrap_err()
            .contains("allowed")
    );
    assert!(map(&json!("yes")).is_err());
    assert!(map(&json!({"allowed": false, "http_status": 299})).is_err());
}
