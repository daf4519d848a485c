// PLACEHOLDER: replaced by the rewrite branch at merge
//! `rewrite`: the interface the filter registry builds against, without the filter itself.

use super::{Filter, FilterContext, FilterError, FilterInput, Verdict};
use crate::config::InvalidKey;
use crate::delivery::BoxFuture;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    pub header: String,
    pub pattern: String,
    pub replace: String,
    #[serde(default)]
    pub on_empty: Option<String>,
}

pub struct RewriteFilter;

impl RewriteFilter {
    pub fn new(_c: &RewriteConfig, _ctx: &FilterContext) -> Result<RewriteFilter, InvalidKey> {
        Ok(RewriteFilter)
    }
}

impl Filter for RewriteFilter {
    fn apply<'a>(
        &'a self,
        _input: &'a FilterInput<'a>,
    ) -> BoxFuture<'a, Result<Verdict, FilterError>> {
        Box::pin(async { Ok(Verdict::Pass) })
    }
}

pub fn summary(c: &RewriteConfig) -> String {
    format!("rewrite {}: /{}/ -> {:?}", c.header, c.pattern, c.replace)
}
