use super::*;
use http::StatusCode;

fn on(names: &[&str]) -> RetryOn {
    let mut on = RetryOn::default();
    for n in names {
        on.add(n).expect("a known condition");
    }
    on
}

fn connect() -> UpstreamError {
    UpstreamError::Connect("refused".into())
}

#[test]
fn conditions_are_envoys_names_or_status_codes() {
    let mut any = RetryOn::default();
    for bad in ["connect_failure", "50", "5000", "200", "retriable-4xx", ""] {
        let e = any.add(bad).expect_err(bad);
        assert!(
            e.starts_with(&format!("unknown retry condition `{bad}`")),
            "{e}"
        );
    }
    let listed = on(&["connect-failure", "503"]);
    assert_eq!(listed.statuses, [503]);
    assert!(listed.connect_failure && !listed.reset);
}

#[test]
fn only_the_listed_failures_are_retried() {
    let listed = on(&["connect-failure", "refused-stream", "503"]);
    let reason = |r: Result<StatusCode, &UpstreamError>| listed.reason(r);
    assert_eq!(reason(Err(&connect())).as_deref(), Some("connect_failure"));
    assert_eq!(
        reason(Err(&UpstreamError::RefusedStream("r".into()))).as_deref(),
        Some("refused_stream")
    );
    assert_eq!(
        reason(Ok(StatusCode::SERVICE_UNAVAILABLE)).as_deref(),
        Some("503")
    );
    assert_eq!(reason(Ok(StatusCode::BAD_GATEWAY)), None);
    assert_eq!(reason(Ok(StatusCode::OK)), None);
    assert_eq!(reason(Err(&UpstreamError::Reset("r".into()))), None);
    assert_eq!(reason(Err(&UpstreamError::Timeout)), None);
    assert_eq!(reason(Err(&UpstreamError::NoHealthyUpstream)), None);
}

#[test]
fn five_xx_and_gateway_error_include_every_failure_before_headers() {
    for name in ["5xx", "gateway-error"] {
        let policy = on(&[name]);
        for e in [
            connect(),
            UpstreamError::Tls("bad certificate".into()),
            UpstreamError::Reset("r".into()),
            UpstreamError::RefusedStream("r".into()),
            UpstreamError::Protocol("p".into()),
            UpstreamError::Timeout,
        ] {
            assert!(policy.reason(Err(&e)).is_some(), "{name} retries {e}");
        }
        assert!(policy.reason(Ok(StatusCode::GATEWAY_TIMEOUT)).is_some());
        assert!(policy.reason(Ok(StatusCode::NOT_FOUND)).is_none());
    }
    assert!(
        on(&["5xx"])
            .reason(Ok(StatusCode::INTERNAL_SERVER_ERROR))
            .is_some()
    );
    assert!(
        on(&["gateway-error"])
            .reason(Ok(StatusCode::INTERNAL_SERVER_ERROR))
            .is_none()
    );
    let reset = on(&["reset"]);
    assert!(
        reset.reason(Err(&UpstreamError::Timeout)).is_some(),
        "a per-try timeout"
    );
    assert!(reset.reason(Err(&connect())).is_none());
}

#[test]
fn the_budget_is_a_share_of_active_requests_with_a_floor() {
    let budget = RetryBudget::new(20, 1);
    let active: Vec<Active<'_>> = (0..10).map(|_| budget.admit()).collect();
    let first = budget.try_retry().expect("20 % of 10 is 2");
    let second = budget.try_retry().expect("20 % of 10 is 2");
    assert!(budget.try_retry().is_none());
    drop(first);
    let third = budget.try_retry().expect("a retry ended");
    drop((second, third, active));
    let _one = budget.admit();
    let floor = budget.try_retry().expect("the floor: one retry");
    assert!(budget.try_retry().is_none());
    drop(floor);
    assert!(budget.try_retry().is_some());
}

#[test]
fn backoff_is_jittered_under_a_growing_ceiling() {
    for attempt in 1..10 {
        let ceiling = BACKOFF_BASE
            .saturating_mul(1 << (attempt - 1).min(4))
            .min(BACKOFF_MAX);
        for _ in 0..50 {
            assert!(backoff(attempt) <= ceiling);
        }
    }
    assert!(
        (0..200).any(|_| backoff(3) > BACKOFF_BASE),
        "jitter spans the ceiling"
    );
}
