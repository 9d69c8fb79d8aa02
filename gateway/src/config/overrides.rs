//! Values given on the command line that replace what the file says, applied to the file as
//! written before anything is validated.

use toml::Spanned;

use super::fields::Errors;
use super::raw;

/// Values given on the command line that replace what the file says, so tests and operators can
/// point a shipped config at other ports without editing it.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `(listener name or None for the first listener, address)`.
    pub listen: Vec<(Option<String>, String)>,
    /// `(backend name, url)`.
    pub backend_urls: Vec<(String, String)>,
    /// `(authz backend name, url)`.
    pub authz_urls: Vec<(String, String)>,
    /// The admin endpoint's address (adds one when the file has none).
    pub admin: Option<String>,
}

pub(super) fn apply_overrides(
    raw: &mut raw::RawConfig,
    overrides: &Overrides,
    errors: &mut Errors,
) {
    for (name, address) in &overrides.listen {
        let target = match name {
            None => raw.listeners.first_mut(),
            Some(n) => raw.listeners.iter_mut().find(|l| l.name.get_ref() == n),
        };
        match target {
            Some(l) => {
                let span = l.address.span();
                l.address = Spanned::new(span, address.clone());
            }
            None => errors.0.push((
                0,
                format!(
                    "--listen: no listener {}",
                    name.as_deref().unwrap_or("at all")
                ),
            )),
        }
    }
    for (name, url) in &overrides.backend_urls {
        match raw.backends.iter_mut().find(|b| b.name.get_ref() == name) {
            Some(b) => {
                // The URL replaces the backend's endpoints too: one address, the one given.
                let span = b.url.as_ref().map_or_else(|| b.name.span(), Spanned::span);
                b.url = Some(Spanned::new(span, url.clone()));
                b.endpoints = None;
            }
            None => errors
                .0
                .push((0, format!("--backend-url: no backend `{name}`"))),
        }
    }
    for (name, url) in &overrides.authz_urls {
        match raw
            .authz_backends
            .iter_mut()
            .find(|b| b.name.get_ref() == name)
        {
            Some(b) => b.url = Spanned::new(b.url.span(), url.clone()),
            None => errors
                .0
                .push((0, format!("--authz-url: no authz backend `{name}`"))),
        }
    }
    if let Some(address) = &overrides.admin {
        let span = raw.admin.as_ref().map_or(0..0, |a| a.address.span());
        let limits = raw.admin.take().and_then(|a| a.limits);
        raw.admin = Some(raw::RawAdmin {
            address: Spanned::new(span, address.clone()),
            limits,
        });
    }
}
