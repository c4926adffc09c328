//! Admin actions and views: resubmit (the admin flag), hold, release, a corrected document
//! (`import --revise`), `show` (a filing's timeline) and `status`.
//!
//! Owns: which state an admin action may start from, and how the views read. Every action is
//! an event carrying the operator and the reason (the store writes it in the same transaction
//! as the change). Must not talk to bureaus: a resubmitted filing is sent by the next cycle.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::store::admin::{DeadlineItem, FilingBrief, Revision, Timeline};
use crate::store::{Store, StoreError, state};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no filing with id {0:?}")]
    NotFound(String),
    #[error("filing {id}: cannot {action} from state {state}: {why}")]
    Refused {
        id: String,
        action: &'static str,
        state: String,
        why: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a resubmission from `state` is refused, or `None` when it is allowed. `corrected`:
/// the document was revised after its latest preflight findings.
pub fn resubmit_refusal(filing_state: &str, corrected: bool) -> Option<String> {
    match filing_state {
        state::REJECTED | state::EXPIRED => None,
        state::NEEDS_CORRECTION if corrected => None,
        state::NEEDS_CORRECTION => Some(
            "correct the document first (import --revise FILE with the corrected filing), then resubmit".into(),
        ),
        state::SUBMITTING | state::SUBMITTED | state::AWAITING_SMS => Some(
            "the bureau holds an open case for it; wait for its result (rejected or expired can be resubmitted)".into(),
        ),
        state::APPROVED => Some(
            "it is approved; a change to the record is a new CHANGE_* filing".into(),
        ),
        state::REVIEWED | state::QUEUED => {
            Some("it is already waiting to be submitted".into())
        }
        state::HELD => Some("it is held; release it instead".into()),
        _ => Some("unknown state".into()),
    }
}

/// Where `hold` may start: before the bureau has the filing.
pub fn holdable(filing_state: &str) -> bool {
    matches!(filing_state, state::REVIEWED | state::QUEUED)
}

/// States in which `import --revise` may replace the document: the bureau does not have it
/// (not yet sent, or its case ended without approval).
pub const REVISABLE: [&str; 6] = [
    state::REVIEWED,
    state::QUEUED,
    state::HELD,
    state::NEEDS_CORRECTION,
    state::REJECTED,
    state::EXPIRED,
];

async fn brief_of(store: &Store, id: &str) -> Result<FilingBrief, AdminError> {
    store
        .filing_brief(id)
        .await?
        .ok_or_else(|| AdminError::NotFound(id.to_owned()))
}

/// `resubmit ID`: the admin flag. Returns the state it left.
pub async fn resubmit(
    store: &Store,
    id: &str,
    operator: &str,
    reason: &str,
) -> Result<String, AdminError> {
    let brief = brief_of(store, id).await?;
    let corrected = store.corrected_since_findings(id).await?;
    if let Some(why) = resubmit_refusal(&brief.state, corrected) {
        return Err(AdminError::Refused {
            id: id.to_owned(),
            action: "resubmit",
            state: brief.state,
            why,
        });
    }
    if !store.resubmit(id, &brief.state, operator, reason).await? {
        return Err(changed_meanwhile(store, id, "resubmit").await);
    }
    Ok(brief.state)
}

/// `hold ID`: only before the bureau has it.
pub async fn hold(
    store: &Store,
    id: &str,
    operator: &str,
    reason: &str,
) -> Result<String, AdminError> {
    let brief = brief_of(store, id).await?;
    if !holdable(&brief.state) {
        return Err(AdminError::Refused {
            id: id.to_owned(),
            action: "hold",
            state: brief.state,
            why: "only a filing the bureau does not have yet (reviewed or queued) can be held"
                .into(),
        });
    }
    if !store.hold(id, &brief.state, operator, reason).await? {
        return Err(changed_meanwhile(store, id, "hold").await);
    }
    Ok(brief.state)
}

/// `release ID`: a held filing goes back to intake.
pub async fn release(
    store: &Store,
    id: &str,
    operator: &str,
    reason: &str,
) -> Result<(), AdminError> {
    let brief = brief_of(store, id).await?;
    if brief.state != state::HELD {
        return Err(AdminError::Refused {
            id: id.to_owned(),
            action: "release",
            state: brief.state,
            why: "it is not held".into(),
        });
    }
    if !store.release(id, operator, reason).await? {
        return Err(changed_meanwhile(store, id, "release").await);
    }
    Ok(())
}

async fn changed_meanwhile(store: &Store, id: &str, action: &'static str) -> AdminError {
    let now_state = match store.filing_brief(id).await {
        Ok(Some(b)) => b.state,
        _ => "unknown".into(),
    };
    AdminError::Refused {
        id: id.to_owned(),
        action,
        state: now_state,
        why: "it changed while the action ran (claimed or decided); look again with show".into(),
    }
}

/// A message for one `import --revise` result.
pub fn describe_revision(id: &str, r: &Revision) -> Result<String, String> {
    match r {
        Revision::Unchanged => Ok(format!("{id}: unchanged")),
        Revision::Revised { revision, state } => Ok(format!(
            "{id}: stored as revision {revision} (state {state}){}",
            match state.as_str() {
                state::REJECTED | state::EXPIRED | state::NEEDS_CORRECTION =>
                    "; resubmit it to send it again",
                _ => "",
            }
        )),
        Revision::Unknown => Err(format!(
            "filing {id}: not known; import it without --revise"
        )),
        Revision::Refused { state } => Err(format!(
            "filing {id}: cannot revise in state {state}: the bureau has it or approved it (revisable: {})",
            REVISABLE.join(", ")
        )),
        Revision::ProvinceChanged { stored } => Err(format!(
            "filing {id}: the revised document names another province than {stored}; a filing for another bureau is a new filing"
        )),
    }
}

// ---- views ----

/// Counts per state and province, and the deadline lists.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub totals: BTreeMap<String, i64>,
    pub by_province: BTreeMap<String, BTreeMap<String, i64>>,
    pub at_risk_hours: i64,
    pub at_risk: Vec<DeadlineItem>,
    pub overdue: Vec<DeadlineItem>,
}

pub fn status_view(
    counts: &[(String, String, i64)],
    at_risk_hours: i64,
    at_risk: Vec<DeadlineItem>,
    overdue: Vec<DeadlineItem>,
) -> StatusView {
    let mut totals: BTreeMap<String, i64> = state::ALL.iter().map(|s| (s.to_string(), 0)).collect();
    let mut by_province: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (s, p, n) in counts {
        *totals.entry(s.clone()).or_default() += n;
        *by_province
            .entry(p.clone())
            .or_default()
            .entry(s.clone())
            .or_default() += n;
    }
    StatusView {
        totals,
        by_province,
        at_risk_hours,
        at_risk,
        overdue,
    }
}

pub fn render_status(v: &StatusView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "filings by state");
    for s in state::ALL {
        let _ = writeln!(out, "  {s:<18} {}", v.totals.get(s).copied().unwrap_or(0));
    }
    if !v.by_province.is_empty() {
        let _ = writeln!(out, "by province");
        for (p, states) in &v.by_province {
            let parts: Vec<String> = states
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(s, n)| format!("{s} {n}"))
                .collect();
            let _ = writeln!(out, "  {p}  {}", parts.join(", "));
        }
    }
    let list = |out: &mut String, title: &str, items: &[DeadlineItem]| {
        let _ = writeln!(out, "{title} ({})", items.len());
        for i in items {
            let _ = writeln!(
                out,
                "  {:<18} {}  {:<16} due {}",
                i.id, i.province, i.state, i.deadline
            );
        }
    };
    list(&mut out, "overdue", &v.overdue);
    list(
        &mut out,
        &format!("at risk (due within {} h)", v.at_risk_hours),
        &v.at_risk,
    );
    out
}

fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) if m.is_empty() => String::new(),
        other => other.to_string(),
    }
}

pub fn render_timeline(t: &Timeline) -> String {
    let f = &t.filing;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  {}  province {}  state {}  revision {}  attempts {}",
        f.id, f.filing_type, f.province, f.state, f.revision, f.attempts
    );
    let _ = writeln!(
        out,
        "  reviewed {}  deadline {}{}",
        f.reviewed_at,
        f.deadline.as_deref().unwrap_or("-"),
        if f.resubmit_requested {
            "  (resubmitted by an admin)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "events");
    for e in &t.events {
        let _ = writeln!(
            out,
            "  {}  {:<22} by {:<10} {}",
            e.at,
            e.kind,
            e.actor,
            compact(&e.detail)
        );
    }
    let _ = writeln!(out, "attempts");
    for a in &t.attempts {
        let _ = writeln!(out, "  #{} at {} ({})", a.attempt, a.created_at, a.province);
        match &a.upload {
            Some(u) => {
                let _ = writeln!(
                    out,
                    "    upload {} dataSequence {} {} stored {} sent {} arrived {}",
                    u.file,
                    u.data_sequence,
                    u.status,
                    u.created_at,
                    u.sent_at.as_deref().unwrap_or("-"),
                    u.arrived_at.as_deref().unwrap_or("-")
                );
            }
            None => {
                let _ = writeln!(out, "    no upload file");
            }
        }
        for r in &a.records {
            let _ = writeln!(
                out,
                "    record Czlx {} Jlid {} {} {} decided {} {}",
                r.czlx,
                r.jlid,
                r.part,
                r.status,
                r.decided_at.as_deref().unwrap_or("-"),
                compact(&r.codes)
            );
        }
    }
    let _ = writeln!(out, "downloads");
    for r in &t.results {
        let _ = writeln!(
            out,
            "  {} ({}) received {} applied {} acked {}  Czlx {} Jlid {} codes {}{}",
            r.file,
            r.kind,
            r.received_at,
            r.applied_at.as_deref().unwrap_or("-"),
            r.acked_at.as_deref().unwrap_or("-"),
            r.czlx.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            r.jlid.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            compact(&r.codes),
            r.decided_at
                .as_deref()
                .map(|d| format!(" decided {d}"))
                .unwrap_or_default()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resubmit_is_allowed_only_where_no_case_is_open() {
        assert_eq!(resubmit_refusal("rejected", false), None);
        assert_eq!(resubmit_refusal("expired", false), None);
        assert_eq!(resubmit_refusal("needs_correction", true), None);
        assert!(
            resubmit_refusal("needs_correction", false)
                .unwrap()
                .contains("--revise")
        );
        for open in ["submitting", "submitted", "awaiting_sms"] {
            assert!(
                resubmit_refusal(open, true).unwrap().contains("open case"),
                "{open}"
            );
        }
        for other in ["approved", "reviewed", "queued", "held"] {
            assert!(resubmit_refusal(other, true).is_some(), "{other}");
        }
    }

    #[test]
    fn hold_only_before_the_bureau_has_it() {
        assert!(holdable("reviewed") && holdable("queued"));
        for s in [
            "submitting",
            "submitted",
            "awaiting_sms",
            "approved",
            "held",
        ] {
            assert!(!holdable(s), "{s}");
        }
    }
}
