//! Provider agreement on shadow traffic. Each pair is one verification scored by its deciding
//! (primary) provider and by a shadow; each side's decision is its score against that
//! verification's threshold, so both are judged by the same rule.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::Config;
use crate::store::reports::ShadowPair;

/// How one provider pair agreed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PairAgreement {
    /// The provider that decided.
    pub primary: String,
    /// The provider called in its shadow.
    pub shadow: String,
    /// Verifications both scored.
    pub pairs: u64,
    /// Share of pairs where both decided the same.
    pub agreement: f64,
    /// Cohen's kappa: agreement beyond what the two approval rates give by chance; `null`
    /// when chance alone explains everything (both always decide the same one way).
    pub kappa: Option<f64>,
    /// Pearson correlation of the two scores; `null` with fewer than two pairs or a constant
    /// score.
    pub score_correlation: Option<f64>,
    pub mean_abs_score_diff: f64,
    pub both_approved: u64,
    /// Where they disagree: the primary approved, the shadow declined.
    pub primary_approved_shadow_declined: u64,
    /// Where they disagree: the primary declined, the shadow approved.
    pub primary_declined_shadow_approved: u64,
    pub both_declined: u64,
    pub primary_latency_p50_ms: i64,
    pub primary_latency_p95_ms: i64,
    pub shadow_latency_p50_ms: i64,
    pub shadow_latency_p95_ms: i64,
    /// Credits per decision by the tenants' `credits.cost`, averaged over the pairs of
    /// metered tenants; `null` when none is metered.
    pub primary_cost: Option<f64>,
    pub shadow_cost: Option<f64>,
}

/// The agreement of every provider pair seen since `since`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AgreementReport {
    pub since: DateTime<Utc>,
    /// The tenant reported on; every tenant when `null`.
    pub tenant: Option<String>,
    pub data: Vec<PairAgreement>,
}

/// Nearest-rank percentile (`p` in 0-100) of sorted values, as the SQL views compute it.
fn percentile(sorted: &[i64], p: u64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len() as u64;
    let rank = n.saturating_mul(p).div_ceil(100).max(1);
    let at = usize::try_from(rank - 1).unwrap_or(0).min(sorted.len() - 1);
    sorted[at]
}

fn pearson(xs: &[f64], ys: &[f64]) -> Option<f64> {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return None;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    let d = (sxx * syy).sqrt();
    (d > 0.0).then(|| sxy / d)
}

fn cost(config: Option<&Config>, tenant: &str, provider: &str) -> Option<i64> {
    let credits = config?.tenants.get(tenant)?.credits.as_ref()?;
    Some(credits.cost_of(provider))
}

fn mean(values: &[i64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<i64>() as f64 / values.len() as f64)
}

/// The report over `pairs`; `config` gives each tenant's costs.
pub fn agreement(
    pairs: &[ShadowPair],
    config: Option<&Config>,
    since: DateTime<Utc>,
    tenant: Option<String>,
) -> AgreementReport {
    let mut groups: BTreeMap<(&str, &str), Vec<&ShadowPair>> = BTreeMap::new();
    for p in pairs {
        groups
            .entry((p.primary_provider.as_str(), p.shadow_provider.as_str()))
            .or_default()
            .push(p);
    }
    let data = groups
        .into_iter()
        .map(|((primary, shadow), ps)| pair_agreement(primary, shadow, &ps, config))
        .collect();
    AgreementReport {
        since,
        tenant,
        data,
    }
}

fn pair_agreement(
    primary: &str,
    shadow: &str,
    ps: &[&ShadowPair],
    config: Option<&Config>,
) -> PairAgreement {
    let count = |f: &dyn Fn(&ShadowPair) -> bool| ps.iter().filter(|p| f(p)).count() as u64;
    let aa = count(&|p| p.primary_approved && p.shadow_approved);
    let ad = count(&|p| p.primary_approved && !p.shadow_approved);
    let da = count(&|p| !p.primary_approved && p.shadow_approved);
    let dd = count(&|p| !p.primary_approved && !p.shadow_approved);
    let n = ps.len() as u64;
    let nf = n.max(1) as f64;
    let observed = (aa + dd) as f64 / nf;
    let primary_yes = (aa + ad) as f64 / nf;
    let shadow_yes = (aa + da) as f64 / nf;
    let chance = primary_yes * shadow_yes + (1.0 - primary_yes) * (1.0 - shadow_yes);
    let kappa = (chance < 1.0).then(|| (observed - chance) / (1.0 - chance));
    let xs: Vec<f64> = ps.iter().map(|p| p.primary_score).collect();
    let ys: Vec<f64> = ps.iter().map(|p| p.shadow_score).collect();
    let mad = ps
        .iter()
        .map(|p| (p.primary_score - p.shadow_score).abs())
        .sum::<f64>()
        / nf;
    let sorted = |f: fn(&ShadowPair) -> i64| {
        let mut v: Vec<i64> = ps.iter().map(|p| f(p)).collect();
        v.sort_unstable();
        v
    };
    let pl = sorted(|p| p.primary_latency_ms);
    let sl = sorted(|p| p.shadow_latency_ms);
    let costs = |provider: &str| -> Vec<i64> {
        ps.iter()
            .filter_map(|p| cost(config, &p.tenant_id, provider))
            .collect()
    };
    PairAgreement {
        primary: primary.to_owned(),
        shadow: shadow.to_owned(),
        pairs: n,
        agreement: observed,
        kappa,
        score_correlation: pearson(&xs, &ys),
        mean_abs_score_diff: mad,
        both_approved: aa,
        primary_approved_shadow_declined: ad,
        primary_declined_shadow_approved: da,
        both_declined: dd,
        primary_latency_p50_ms: percentile(&pl, 50),
        primary_latency_p95_ms: percentile(&pl, 95),
        shadow_latency_p50_ms: percentile(&sl, 50),
        shadow_latency_p95_ms: percentile(&sl, 95),
        primary_cost: mean(&costs(primary)),
        shadow_cost: mean(&costs(shadow)),
    }
}

const HEADERS: [&str; 17] = [
    "primary",
    "shadow",
    "pairs",
    "agreement",
    "kappa",
    "score_corr",
    "mean_abs_diff",
    "both_approved",
    "p_app_s_dec",
    "p_dec_s_app",
    "both_declined",
    "p_p50_ms",
    "p_p95_ms",
    "s_p50_ms",
    "s_p95_ms",
    "p_cost",
    "s_cost",
];

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_default()
}

fn cells(p: &PairAgreement) -> [String; 17] {
    [
        p.primary.clone(),
        p.shadow.clone(),
        p.pairs.to_string(),
        format!("{:.4}", p.agreement),
        opt(p.kappa),
        opt(p.score_correlation),
        format!("{:.4}", p.mean_abs_score_diff),
        p.both_approved.to_string(),
        p.primary_approved_shadow_declined.to_string(),
        p.primary_declined_shadow_approved.to_string(),
        p.both_declined.to_string(),
        p.primary_latency_p50_ms.to_string(),
        p.primary_latency_p95_ms.to_string(),
        p.shadow_latency_p50_ms.to_string(),
        p.shadow_latency_p95_ms.to_string(),
        opt(p.primary_cost),
        opt(p.shadow_cost),
    ]
}

/// A terminal table: one row per pair, columns aligned (names left, numbers right).
pub fn table(r: &AgreementReport) -> String {
    let rows: Vec<[String; 17]> = r.data.iter().map(cells).collect();
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cols.iter().zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            if i < 2 {
                let _ = write!(out, "{c:<w$}");
            } else {
                let _ = write!(out, "{c:>w$}");
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(HEADERS.to_vec());
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no shadow pairs in this period)\n");
    }
    out
}

/// RFC 4180 CSV with a header row.
pub fn csv(r: &AgreementReport) -> String {
    let quote = |c: &str| {
        if c.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", c.replace('"', "\"\""))
        } else {
            c.to_owned()
        }
    };
    let mut out = HEADERS.join(",");
    out.push_str("\r\n");
    for p in &r.data {
        let row: Vec<String> = cells(p).iter().map(|c| quote(c)).collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(pa: bool, sa: bool, ps: f64, ss: f64) -> ShadowPair {
        ShadowPair {
            tenant_id: "t".into(),
            primary_provider: "a".into(),
            shadow_provider: "b".into(),
            primary_score: ps,
            shadow_score: ss,
            primary_approved: pa,
            shadow_approved: sa,
            primary_latency_ms: 10,
            shadow_latency_ms: 20,
        }
    }

    #[test]
    fn kappa_and_counts_by_hand() {
        // 2×2: 4 both approved, 1 each way, 4 both declined → po 0.8, pe 0.5, κ 0.6.
        let mut ps = Vec::new();
        ps.extend((0..4).map(|_| pair(true, true, 0.9, 0.8)));
        ps.push(pair(true, false, 0.9, 0.2));
        ps.push(pair(false, true, 0.1, 0.7));
        ps.extend((0..4).map(|_| pair(false, false, 0.1, 0.2)));
        let r = agreement(&ps, None, Utc::now(), None);
        let p = &r.data[0];
        assert_eq!(p.pairs, 10);
        assert!((p.agreement - 0.8).abs() < 1e-12);
        assert!((p.kappa.expect("kappa") - 0.6).abs() < 1e-12);
        assert_eq!(
            (
                p.both_approved,
                p.primary_approved_shadow_declined,
                p.primary_declined_shadow_approved,
                p.both_declined
            ),
            (4, 1, 1, 4)
        );
        assert!(p.primary_cost.is_none());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<i64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50), 10);
        assert_eq!(percentile(&v, 95), 19);
        assert_eq!(percentile(&[7], 95), 7);
        assert_eq!(percentile(&[], 50), 0);
    }

    #[test]
    fn always_agreeing_one_way_has_no_kappa() {
        let ps: Vec<_> = (0..3).map(|_| pair(true, true, 0.9, 0.9)).collect();
        let r = agreement(&ps, None, Utc::now(), None);
        assert_eq!(r.data[0].kappa, None);
        assert_eq!(r.data[0].score_correlation, None);
    }
}
