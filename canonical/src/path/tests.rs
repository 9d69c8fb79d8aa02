use proptest::prelude::*;

use super::*;

fn canon(raw: &str) -> Result<String, PathError> {
    canonical_path(raw, &PathOptions::default())
}

fn with(
    raw: &str,
    merge_slashes: bool,
    escaped_slashes: EscapedSlashes,
) -> Result<String, PathError> {
    canonical_path(
        raw,
        &PathOptions {
            merge_slashes,
            escaped_slashes,
            path_parameters: PathParameters::Keep,
        },
    )
}

fn params(raw: &str, path_parameters: PathParameters) -> Result<String, PathError> {
    canonical_path(
        raw,
        &PathOptions {
            path_parameters,
            ..PathOptions::default()
        },
    )
}

#[test]
fn path_parameters_are_refused_by_default() {
    for raw in ["/admin;foo/x", "/admin;/x", "/x/..;/admin/x", "/;", "/a/b;"] {
        assert_eq!(canon(raw), Err(PathError::PathParameter), "{raw:?}");
        assert!(!is_canonical_path(raw, &PathOptions::default()), "{raw:?}");
    }
    // Tomcat, Jetty and Spring strip before they decode: `%3B` is data to them.
    assert_eq!(canon("/admin%3bfoo/x").unwrap(), "/admin%3Bfoo/x");
}

#[test]
fn stripped_path_parameters_leave_the_path_a_java_server_routes() {
    let strip = |raw| params(raw, PathParameters::Strip).unwrap();
    assert_eq!(strip("/admin;foo/x"), "/admin/x");
    assert_eq!(strip("/admin;/x"), "/admin/x");
    assert_eq!(strip("/x/..;/admin/x"), "/admin/x");
    assert_eq!(strip("/x/%2e%2e;v=1/admin/x"), "/admin/x");
    assert_eq!(strip("/x;jsessionid=ABC"), "/x");
    assert_eq!(strip("/;a/;b/c"), "/c");
    // An encoded `;` is data: those servers strip before they decode.
    assert_eq!(strip("/a%3bb;c"), "/a%3Bb");
}

#[test]
fn kept_path_parameters_are_data() {
    let keep = |raw| params(raw, PathParameters::Keep).unwrap();
    assert_eq!(keep("/admin;foo/x"), "/admin;foo/x");
    assert_eq!(keep("/x/..;/admin"), "/x/..;/admin");
    assert_eq!(keep("/a%3bb"), "/a%3Bb");
    let options = PathOptions {
        path_parameters: PathParameters::Keep,
        ..PathOptions::default()
    };
    assert!(is_canonical_path("/admin;foo/x", &options));
}

#[test]
fn dot_segments_resolve_and_never_climb_above_the_root() {
    assert_eq!(canon("/public/../admin/x").unwrap(), "/admin/x");
    assert_eq!(canon("/./admin/x").unwrap(), "/admin/x");
    assert_eq!(canon("/../../admin").unwrap(), "/admin");
    assert_eq!(canon("/a/b/..").unwrap(), "/a/");
    assert_eq!(canon("/a/.").unwrap(), "/a/");
    assert_eq!(canon("/..").unwrap(), "/");
    assert_eq!(canon("/").unwrap(), "/");
    assert_eq!(canon("/a/..b/c.").unwrap(), "/a/..b/c.");
}

#[test]
fn slashes_merge_unless_told_not_to() {
    assert_eq!(canon("//admin/x").unwrap(), "/admin/x");
    assert_eq!(canon("/admin//x///").unwrap(), "/admin/x/");
    assert_eq!(
        with("/admin//x", false, EscapedSlashes::Reject).unwrap(),
        "/admin//x"
    );
    assert_eq!(
        with("/a//..", false, EscapedSlashes::Reject).unwrap(),
        "/a/"
    );
}

#[test]
fn unreserved_escapes_decode_and_the_rest_upper_case() {
    assert_eq!(canon("/%61dmin/x").unwrap(), "/admin/x");
    assert_eq!(canon("/%7Euser/%2d%5f").unwrap(), "/~user/-_");
    assert_eq!(canon("/a%3bb%3D").unwrap(), "/a%3Bb%3D");
    assert_eq!(canon("/100%25").unwrap(), "/100%25");
    assert_eq!(canon("/a b\"<>").unwrap(), "/a%20b%22%3C%3E");
    assert_eq!(canon("/caf\u{e9}").unwrap(), "/caf%C3%A9");
    let keep = |raw| params(raw, PathParameters::Keep);
    assert_eq!(keep("/a;b=c:d@e!$&'()*+,").unwrap(), "/a;b=c:d@e!$&'()*+,");
}

#[test]
fn encoded_dots_are_dots() {
    assert_eq!(canon("/public/%2e%2e/admin/x").unwrap(), "/admin/x");
    assert_eq!(canon("/public/%2E./admin/").unwrap(), "/admin/");
    assert_eq!(canon("/public/.%2E/admin/").unwrap(), "/admin/");
    assert_eq!(canon("/%2e/admin").unwrap(), "/admin");
}

#[test]
fn escaped_slashes_follow_the_policy() {
    for raw in ["/admin%2Fx", "/admin%2fx", "/admin%5Cx", "/admin\\x"] {
        assert_eq!(canon(raw), Err(PathError::EscapedSlash), "{raw}");
    }
    assert_eq!(
        with("/admin%2fx", true, EscapedSlashes::Keep).unwrap(),
        "/admin%2Fx"
    );
    assert_eq!(
        with("/admin\\x", true, EscapedSlashes::Keep).unwrap(),
        "/admin%5Cx"
    );
    assert_eq!(
        with("/admin%2Fx", true, EscapedSlashes::Unescape).unwrap(),
        "/admin/x"
    );
    assert_eq!(
        with("/admin%5c%5cx", true, EscapedSlashes::Unescape).unwrap(),
        "/admin/x"
    );
    assert_eq!(
        with("/public%2F..%2Fadmin", true, EscapedSlashes::Unescape).unwrap(),
        "/admin"
    );
    // Kept escapes are data: they neither separate segments nor make dot segments.
    assert_eq!(
        with("/public%2F..%2Fadmin", true, EscapedSlashes::Keep).unwrap(),
        "/public%2F..%2Fadmin"
    );
}

#[test]
fn what_has_no_canonical_form() {
    assert_eq!(canon(""), Err(PathError::NotOriginForm));
    assert_eq!(canon("admin"), Err(PathError::NotOriginForm));
    assert_eq!(canon("*"), Err(PathError::NotOriginForm));
    assert_eq!(canon("http://a/b"), Err(PathError::NotOriginForm));
    assert_eq!(canon("/a%zz"), Err(PathError::InvalidPercentEncoding));
    assert_eq!(canon("/a%2"), Err(PathError::InvalidPercentEncoding));
    assert_eq!(canon("/a%"), Err(PathError::InvalidPercentEncoding));
    assert_eq!(canon("/a%00b"), Err(PathError::ControlCharacter));
    assert_eq!(canon("/a\nb"), Err(PathError::ControlCharacter));
    assert_eq!(canon("/a\u{7f}"), Err(PathError::ControlCharacter));
    assert_eq!(canon("/admin/x#frag"), Err(PathError::Fragment));
    assert_eq!(canon("/a?b"), Err(PathError::QueryInPath));
}

#[test]
fn clean_paths_are_seen_as_canonical_at_once() {
    let options = PathOptions::default();
    assert!(is_canonical_path("/v1/chat/completions", &options));
    assert!(is_canonical_path("/", &options));
    assert!(is_canonical_path("/a/b/", &options));
    assert!(is_canonical_path("/a.b/..c/.d", &options));
    for changed in [
        "", "a", "//a", "/a//b", "/./a", "/a/..", "/a/.", "/%61", "/a b", "/é", "/a\\b",
    ] {
        assert!(!is_canonical_path(changed, &options), "{changed:?}");
    }
    let keep = PathOptions {
        merge_slashes: false,
        ..options
    };
    assert!(is_canonical_path("//a//b", &keep));
}

#[test]
fn targets_split_at_the_first_question_mark() {
    assert_eq!(split_target("/a?b=1?c").unwrap(), ("/a", Some("b=1?c")));
    assert_eq!(split_target("/a").unwrap(), ("/a", None));
    assert_eq!(split_target("/a?").unwrap(), ("/a", Some("")));
    assert_eq!(split_target("/a?x#f"), Err(PathError::Fragment));
    assert_eq!(split_target("/a?x\r\n"), Err(PathError::ControlCharacter));
}

/// Paths built from the pieces that matter: separators, dots, escapes of each kind, letters.
fn tricky_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/"),
        Just("."),
        Just(".."),
        Just("%2e"),
        Just("%2E"),
        Just("%2f"),
        Just("%5C"),
        Just("\\"),
        Just("%61"),
        Just("%3b"),
        Just(";"),
        Just("..;"),
        Just("%25"),
        Just("%"),
        Just("a"),
        Just("admin"),
        Just("~"),
        Just(" "),
        Just("é"),
        Just(";"),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| format!("/{}", pieces.concat()))
}

fn any_options() -> impl Strategy<Value = PathOptions> {
    (
        any::<bool>(),
        prop_oneof![
            Just(EscapedSlashes::Keep),
            Just(EscapedSlashes::Reject),
            Just(EscapedSlashes::Unescape)
        ],
        prop_oneof![
            Just(PathParameters::Keep),
            Just(PathParameters::Reject),
            Just(PathParameters::Strip)
        ],
    )
        .prop_map(
            |(merge_slashes, escaped_slashes, path_parameters)| PathOptions {
                merge_slashes,
                escaped_slashes,
                path_parameters,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn canonicalisation_is_idempotent(raw in tricky_path(), options in any_options()) {
        if let Ok(once) = canonical_path(&raw, &options) {
            prop_assert_eq!(canonical_path(&once, &options), Ok(once.clone()));
        }
    }

    #[test]
    fn the_result_never_leaves_the_root(raw in tricky_path(), options in any_options()) {
        if let Ok(path) = canonical_path(&raw, &options) {
            prop_assert!(path.starts_with('/'));
            for segment in path.split('/') {
                prop_assert!(segment != "." && segment != "..", "{} has a dot segment", path);
            }
            if options.merge_slashes {
                prop_assert!(!path.contains("//"), "{} has `//`", path);
            }
            // Nothing a decoding backend would read as a separator or a dot is left hidden,
            // except escapes the operator chose to keep.
            let upper = path.to_ascii_uppercase();
            prop_assert!(!upper.contains("%2E"), "{} keeps an encoded dot", path);
            if options.escaped_slashes != EscapedSlashes::Keep {
                prop_assert!(!upper.contains("%2F") && !upper.contains("%5C") && !path.contains('\\'));
            }
        }
    }

    /// The quick check never says "canonical" of a path the algorithm would change, and says it
    /// of every result of the algorithm that is plain ASCII path characters.
    #[test]
    fn the_quick_check_agrees_with_the_algorithm(raw in tricky_path(), options in any_options()) {
        let full = canonical_path(&raw, &options);
        if is_canonical_path(&raw, &options) {
            prop_assert_eq!(full.as_deref(), Ok(raw.as_str()));
        }
        if let Ok(path) = full
            && !path.contains('%')
        {
            prop_assert!(is_canonical_path(&path, &options), "{} not seen as canonical", path);
        }
    }

    #[test]
    fn the_quick_host_check_agrees(raw in "[a-zA-Z0-9.:_\\-]{0,12}", scheme in "(http|https|)") {
        for strip_any_port in [false, true] {
            let options = crate::HostOptions { strip_any_port };
            let full = crate::canonical_host(&raw, &scheme, &options);
            if crate::is_canonical_host(&raw, &scheme, &options) {
                prop_assert_eq!(full.as_deref(), Ok(raw.as_str()));
            }
            if let Ok(host) = full {
                prop_assert!(crate::is_canonical_host(&host, &scheme, &options), "{}", host);
            }
        }
    }

    #[test]
    fn arbitrary_input_never_panics(raw in "\\PC*", options in any_options()) {
        let _ = canonical_path(&raw, &options);
        let _ = split_target(&raw);
        let _ = crate::canonical_host(&raw, "http", &crate::HostOptions::default());
    }
}
