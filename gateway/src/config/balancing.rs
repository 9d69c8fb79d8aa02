//! A backend's endpoints and how requests are spread and health is judged, as written →
//! validated: `url` or `endpoints` (exactly one; every endpoint the same scheme, no path, no
//! duplicate), `lb_policy`, `outlier_detection` and `health_check`, each error at its place.

use std::collections::HashSet;
use std::time::Duration;

use toml::Spanned;

use super::fields::{Errors, duration};
use super::raw;
use crate::upstream::balance::LbPolicy;
use crate::upstream::balance::LbSettings;
use crate::upstream::health_check::HealthCheckConfig;
use crate::upstream::outlier::{self, OutlierConfig};

const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_HEALTHY_THRESHOLD: u32 = 1;
const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;

/// `(https, host, port)` of one endpoint.
pub(super) type EndpointUrl = (bool, String, u16);

/// The backend's endpoint URLs: `url`, or every entry of `endpoints`, each checked by
/// `backend_url` (the backend section's URL rule).
pub(super) fn endpoint_urls(
    b: &raw::RawBackend,
    backend_url: impl Fn(&Spanned<String>, &mut Errors) -> Option<EndpointUrl>,
    errors: &mut Errors,
) -> Option<Vec<EndpointUrl>> {
    let list = match (&b.url, &b.endpoints) {
        (Some(url), None) => return backend_url(url, errors).map(|u| vec![u]),
        (Some(_), Some(list)) => {
            errors.at(list, "a backend takes `url` or `endpoints`, not both");
            return None;
        }
        (None, None) => {
            errors.at(&b.name, "a backend needs `url` or `endpoints`");
            return None;
        }
        (None, Some(list)) => list,
    };
    if list.get_ref().is_empty() {
        errors.at(list, "`endpoints` needs at least one URL");
        return None;
    }
    let mut urls = Vec::with_capacity(list.get_ref().len());
    let mut seen = HashSet::new();
    let mut failed = false;
    for entry in list.get_ref() {
        let Some(url) = backend_url(entry, errors) else {
            failed = true;
            continue;
        };
        if !seen.insert((url.1.to_ascii_lowercase(), url.2)) {
            errors.at(entry, format!("duplicate endpoint `{}`", entry.get_ref()));
            failed = true;
        }
        urls.push(url);
    }
    if !failed && urls.iter().any(|u| u.0 != urls[0].0) {
        errors.at(
            list,
            "every endpoint of a backend has the same scheme (all http:// or all https://)",
        );
        return None;
    }
    (!failed).then_some(urls)
}

/// `lb_policy`, `outlier_detection` and `health_check`; absent keys take the defaults
/// (least request, no outlier detection, no health checks).
pub(super) fn lb_settings(b: &raw::RawBackend, errors: &mut Errors) -> Option<LbSettings> {
    let before = errors.0.len();
    let policy = lb_policy(b.lb_policy.as_ref(), errors);
    let outlier = b
        .outlier_detection
        .as_ref()
        .map(|o| outlier_detection(o, errors));
    let health_check = b.health_check.as_ref().map(|h| health_check(h, errors));
    (errors.0.len() == before).then_some(LbSettings {
        policy,
        outlier,
        health_check,
    })
}

fn lb_policy(field: Option<&Spanned<String>>, errors: &mut Errors) -> LbPolicy {
    match field.map(|f| f.get_ref().as_str()) {
        None | Some("least_request") => LbPolicy::LeastRequest,
        Some("round_robin") => LbPolicy::RoundRobin,
        Some(other) => {
            if let Some(f) = field {
                errors.at(
                    f,
                    format!(
                        "unknown lb_policy `{other}`: expected \"least_request\" or \"round_robin\""
                    ),
                );
            }
            LbPolicy::LeastRequest
        }
    }
}

fn outlier_detection(o: &Spanned<raw::RawOutlierDetection>, errors: &mut Errors) -> OutlierConfig {
    let raw = o.get_ref();
    let percent =
        raw.max_ejection_percent
            .as_ref()
            .map_or(outlier::DEFAULT_MAX_EJECTION_PERCENT, |p| {
                if *p.get_ref() > 100 {
                    errors.at(p, "max_ejection_percent is a percentage: 0 to 100");
                }
                *p.get_ref()
            });
    let count =
        |f: &Option<Spanned<u32>>, default: u32| f.as_ref().map_or(default, |c| *c.get_ref());
    OutlierConfig {
        consecutive_5xx: count(&raw.consecutive_5xx, outlier::DEFAULT_CONSECUTIVE_5XX),
        consecutive_connect_failures: count(
            &raw.consecutive_connect_failures,
            outlier::DEFAULT_CONSECUTIVE_CONNECT_FAILURES,
        ),
        base_ejection_time: duration(
            &raw.base_ejection_time,
            outlier::DEFAULT_BASE_EJECTION_TIME,
            errors,
        ),
        max_ejection_time: duration(
            &raw.max_ejection_time,
            outlier::DEFAULT_MAX_EJECTION_TIME,
            errors,
        ),
        max_ejection_percent: percent,
    }
}

fn health_check(h: &Spanned<raw::RawHealthCheck>, errors: &mut Errors) -> HealthCheckConfig {
    let raw = h.get_ref();
    let path = raw.path.get_ref();
    if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
        errors.at(
            &raw.path,
            format!("invalid health_check path `{path}`: expected a path starting with `/`"),
        );
    }
    let threshold = |f: &Option<Spanned<u32>>, default: u32, errors: &mut Errors| {
        let Some(f) = f else { return default };
        if *f.get_ref() == 0 {
            errors.at(f, "a health_check threshold is at least 1");
        }
        *f.get_ref()
    };
    HealthCheckConfig {
        path: path.clone(),
        interval: duration(&raw.interval, DEFAULT_HEALTH_INTERVAL, errors),
        timeout: duration(&raw.timeout, DEFAULT_HEALTH_TIMEOUT, errors),
        healthy_threshold: threshold(&raw.healthy_threshold, DEFAULT_HEALTHY_THRESHOLD, errors),
        unhealthy_threshold: threshold(
            &raw.unhealthy_threshold,
            DEFAULT_UNHEALTHY_THRESHOLD,
            errors,
        ),
    }
}
