//! Faults on demand for the sandbox bureau: rules that make the next N calls of an operation
//! (per province or for all) misbehave — a msg_code, an HTTP status, a reset, a slow or lost,
//! malformed or oversized answer, a wrong hash on a download, a gap claim.
//!
//! Owns: the rule set and its counting. Must not touch account state: the HTTP layer
//! (mod.rs) asks [`FaultSwitch::take`] once per call and acts on the answer.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer this msg_code (15, 20, 901, 902, 5, 12, …) instead of processing.
    MsgCode { code: i64 },
    /// Answer this HTTP status with no SOAP body.
    Http { status: u16 },
    /// Answer a SOAP Fault (HTTP 500, `soap:Server`) instead of processing.
    SoapFault,
    /// Drop the connection without an answer.
    Reset,
    /// Wait this long before answering.
    Slow { millis: u64 },
    /// Process the upload, then drop the connection (the answer is lost).
    LoseAnswer,
    /// A truncated answer (not well-formed XML).
    Malformed,
    /// An answer padded to about this many bytes (default 5 MB).
    Oversized {
        #[serde(default = "default_oversize")]
        bytes: usize,
    },
    /// The next download's `beianInfoHash` does not match its content.
    WrongHash,
    /// msg_code 14 claiming `missing` (default: the number being uploaded) was not received.
    GapClaim {
        #[serde(default)]
        missing: Option<i64>,
    },
}

fn default_oversize() -> usize {
    5 * 1024 * 1024
}

fn one() -> usize {
    1
}

/// A fault for the next `count` matching calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Province code, or none for every province.
    #[serde(default)]
    pub province: Option<String>,
    /// SOAP operation (`isp_upload`, …), or none for the fault's natural one: `isp_upload` for
    /// msg_code, lose_answer and gap_claim, `isp_download` for wrong_hash, any call otherwise.
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(flatten)]
    pub fault: Fault,
    #[serde(default = "one")]
    pub count: usize,
    /// Process the call first, then misbehave (lose_answer always does).
    #[serde(default)]
    pub after_processing: bool,
}

impl FaultRule {
    pub fn new(fault: Fault, count: usize) -> Self {
        Self {
            province: None,
            operation: None,
            fault,
            count,
            after_processing: false,
        }
    }

    pub fn province(mut self, province: &str) -> Self {
        self.province = Some(province.to_owned());
        self
    }

    pub fn operation(mut self, op: &str) -> Self {
        self.operation = Some(op.to_owned());
        self
    }

    pub fn after_processing(mut self) -> Self {
        self.after_processing = true;
        self
    }

    fn matches(&self, province: &str, op: &str) -> bool {
        let province_ok = self.province.as_deref().is_none_or(|p| p == province);
        let op_ok = match self.operation.as_deref() {
            Some(o) => o == op,
            None => match self.fault {
                Fault::MsgCode { .. } | Fault::LoseAnswer | Fault::GapClaim { .. } => {
                    op == "isp_upload"
                }
                Fault::WrongHash => op == "isp_download",
                _ => true,
            },
        };
        province_ok && op_ok && self.count > 0
    }
}

/// The shared, clonable switch board.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch {
    rules: Arc<Mutex<Vec<FaultRule>>>,
}

impl FaultSwitch {
    fn lock(&self) -> MutexGuard<'_, Vec<FaultRule>> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a rule (rules are consulted in the order added).
    pub fn add(&self, rule: FaultRule) {
        self.lock().push(rule);
    }

    /// `fault` on the next `count` matching calls, for one province or (None) all.
    pub fn set(&self, province: Option<&str>, fault: Fault, count: usize) {
        let mut rule = FaultRule::new(fault, count);
        rule.province = province.map(str::to_owned);
        self.add(rule);
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The rules still armed.
    pub fn pending(&self) -> Vec<FaultRule> {
        self.lock().clone()
    }

    /// The fault for this call, if a rule matches (its count goes down by one).
    pub fn take(&self, province: &str, op: &str) -> Option<FaultRule> {
        let mut rules = self.lock();
        let i = rules.iter().position(|r| r.matches(province, op))?;
        rules[i].count -= 1;
        let taken = rules[i].clone();
        if rules[i].count == 0 {
            rules.remove(i);
        }
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_json() {
        let s = FaultSwitch::default();
        let r: FaultRule =
            serde_json::from_str(r#"{"kind":"msg_code","code":15,"count":2,"province":"110000"}"#)
                .unwrap();
        s.add(r);
        assert!(s.take("310000", "isp_upload").is_none());
        assert!(s.take("110000", "isp_download").is_none());
        assert_eq!(
            s.take("110000", "isp_upload").unwrap().fault,
            Fault::MsgCode { code: 15 }
        );
        assert!(s.take("110000", "isp_upload").is_some());
        assert!(s.take("110000", "isp_upload").is_none());
        let r: FaultRule = serde_json::from_str(r#"{"kind":"reset"}"#).unwrap();
        assert_eq!(r.count, 1);
    }
}
