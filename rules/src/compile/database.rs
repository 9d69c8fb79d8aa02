//! Compiling `[databases]`: names and URLs checked, pool sizes bounded. The pools themselves are
//! opened by the server (the `rules` crate holds no connection).

use std::collections::BTreeMap;

use toml::Spanned;

use super::Compiler;
use crate::config::RawDatabase;
use crate::error::Invalid;
use crate::lookup::DatabaseSpec;

impl Compiler<'_> {
    /// The `[databases]` tables, checked; the names are remembered for lookups.
    pub(super) fn databases(
        &mut self,
        raw: &BTreeMap<String, Spanned<RawDatabase>>,
    ) -> Vec<DatabaseSpec> {
        let mut specs = Vec::with_capacity(raw.len());
        for (name, table) in raw {
            self.database_names.push(name.clone());
            if let Some(spec) = self.database(name, table) {
                specs.push(spec);
            }
        }
        specs
    }

    /// One `[databases.<name>]` table.
    fn database(&mut self, name: &str, raw: &Spanned<RawDatabase>) -> Option<DatabaseSpec> {
        let RawDatabase { url, pool_size } = raw.get_ref();
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            let name = name.to_owned();
            self.fail(raw.span().start, Invalid::DatabaseName { name });
        }
        let text = url.get_ref();
        let url_ok = text.starts_with("sqlite:")
            || text.starts_with("postgres://")
            || text.starts_with("postgresql://");
        if !url_ok {
            self.fail(url.span().start, Invalid::DatabaseUrl);
        }
        let pool_size = self.integer("pool_size", pool_size.as_ref(), 8, 1, 1024, "1..=1024");
        let pool_size = u32::try_from(pool_size?).ok()?;
        (name_ok && url_ok).then(|| DatabaseSpec {
            name: name.to_owned(),
            url: text.clone(),
            pool_size,
        })
    }
}
