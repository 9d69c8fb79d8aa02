//! A route's `retries = { ... }` as written → [`RetryPolicy`], each error at its place.

use std::sync::Arc;

use toml::Spanned;

use super::fields::{Errors, duration};
use super::raw;
use crate::proxy::retry::policy::{self as retry, RetryBudget, RetryOn, RetryPolicy};

/// More tries than this only prolong an outage.
const MAX_ATTEMPTS: u32 = 10;
/// Retried bodies are held in memory for the whole request: bounded.
const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// What `on` is when absent: the failures where the backend never saw the request.
const DEFAULT_ON: [&str; 2] = ["connect-failure", "refused-stream"];

/// The route's policy, if it has one. An upgraded stream cannot be sent twice, so a route that
/// tunnels upgrades takes no retries.
pub(super) fn route_retries(r: &raw::RawRoute, errors: &mut Errors) -> Option<Arc<RetryPolicy>> {
    let retries = r.retries.as_ref()?;
    if !r.upgrades.is_empty() {
        errors.at(
            retries,
            "a route with `upgrades` takes no `retries`: an upgraded stream cannot be sent again",
        );
        return None;
    }
    retry_policy(retries, errors)
}

/// The validated policy; `None` when an error was recorded.
fn retry_policy(r: &Spanned<raw::RawRetries>, errors: &mut Errors) -> Option<Arc<RetryPolicy>> {
    let before = errors.0.len();
    let raw = r.get_ref();
    let attempts = *raw.attempts.get_ref();
    if !(1..=MAX_ATTEMPTS).contains(&attempts) {
        errors.at(
            &raw.attempts,
            format!("retries attempts is the number of tries, first included: 1 to {MAX_ATTEMPTS}"),
        );
    }
    let on = retry_on(raw.on.as_ref(), errors);
    let per_try_timeout = raw
        .per_try_timeout
        .is_some()
        .then(|| duration(&raw.per_try_timeout, std::time::Duration::ZERO, errors));
    let percent = raw
        .budget_percent
        .as_ref()
        .map_or(retry::DEFAULT_BUDGET_PERCENT, |p| {
            if *p.get_ref() > 100 {
                errors.at(p, "budget_percent is a percentage: 0 to 100");
            }
            *p.get_ref()
        });
    let min_concurrency = raw
        .min_retry_concurrency
        .as_ref()
        .map_or(retry::DEFAULT_MIN_RETRY_CONCURRENCY, |m| *m.get_ref());
    let max_body_bytes =
        raw.max_body_bytes
            .as_ref()
            .map_or(retry::DEFAULT_MAX_BODY_BYTES as u64, |m| {
                if *m.get_ref() > MAX_BODY_BYTES {
                    errors.at(m, format!("max_body_bytes is at most {MAX_BODY_BYTES}"));
                }
                *m.get_ref()
            });
    (errors.0.len() == before).then(|| {
        Arc::new(RetryPolicy {
            attempts,
            on,
            per_try_timeout,
            max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
            budget: RetryBudget::new(percent, min_concurrency),
        })
    })
}

fn retry_on(field: Option<&Spanned<Vec<Spanned<String>>>>, errors: &mut Errors) -> RetryOn {
    let mut on = RetryOn::default();
    let Some(field) = field else {
        for name in DEFAULT_ON {
            // The defaults are known names.
            let _ = on.add(name);
        }
        return on;
    };
    if field.get_ref().is_empty() {
        errors.at(field, "retries `on` needs at least one condition");
    }
    for name in field.get_ref() {
        if let Err(e) = on.add(name.get_ref()) {
            errors.at(name, e);
        }
    }
    on
}
