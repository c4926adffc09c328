//! Building one upload file for a bureau: pick queued filings earliest deadline first, plan
//! their ids, prepare attachments, build the V.3.0 data file, GBK-encode and zip it. Filings
//! the data file cannot carry go to `needs_correction` with every finding at once.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;
use tracing::{debug, warn};

use super::{CycleReport, Gateway, PipelineError};
use crate::attachments;
use crate::datafile::ids::{
    self, RecordIds, RegAccess, RegApp, RegDomain, RegIp, RegSubject, RegWebsite, Registry,
};
use crate::datafile::upload::{self, BuildOptions, BuildRecord, PreparedAttachment};
use crate::domain::{Filing, FilingType};
use crate::package;
use crate::store::registry::{PubAccess, RegistryEntry};
use crate::store::{NewAttempt, NewUploadFile, QueuedFiling, Reason};

/// A file ready to be stored with the claims of the filings it carries.
#[derive(Debug)]
pub struct BuiltBatch {
    pub expected_last: i64,
    pub file: NewUploadFile,
    pub attempts: Vec<NewAttempt>,
}

/// Registry entries preloaded for the record numbers of a batch.
#[derive(Default)]
struct Preloaded {
    subjects: HashMap<String, RegSubject>,
    websites: HashMap<String, RegWebsite>,
    apps: HashMap<String, RegApp>,
}

impl Registry for Preloaded {
    fn subject(&self, record_number: &str) -> Option<RegSubject> {
        self.subjects.get(record_number).cloned()
    }
    fn website(&self, record_number: &str) -> Option<RegWebsite> {
        self.websites.get(record_number).cloned()
    }
    fn app(&self, record_number: &str) -> Option<RegApp> {
        self.apps.get(record_number).cloned()
    }
}

fn reg_accesses(accesses: &[PubAccess]) -> Vec<RegAccess> {
    accesses
        .iter()
        .map(|a| RegAccess {
            jrid: a.jrid,
            isp_jrid: a.isp_jrid,
            ips: a
                .ips
                .iter()
                .map(|ip| RegIp {
                    ip: ip.ip,
                    ipid: ip.ipid,
                    isp_ipid: ip.isp_ipid,
                })
                .collect(),
        })
        .collect()
}

fn record_numbers(f: &Filing) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    out.extend(f.subject.record_number.as_deref());
    out.extend(f.websites.iter().filter_map(|w| w.record_number.as_deref()));
    out.extend(f.apps.iter().filter_map(|a| a.record_number.as_deref()));
    out.extend(f.cancels.iter().map(String::as_str));
    out
}

/// The (Czlx, Jlid, part) results the bureau will send for a filing (section 5.1).
fn result_keys(f: &Filing, ids: &RecordIds) -> Vec<(i64, i64, String)> {
    let site = |i: usize| format!("websites[{i}]");
    let mut keys = Vec::new();
    match f.filing_type {
        FilingType::First => keys.extend(ids.isp_ztid.map(|id| (1, id, "subject".to_owned()))),
        FilingType::App if f.subject.record_number.is_none() => {
            keys.extend(ids.isp_ztid.map(|id| (1, id, "subject".to_owned())))
        }
        FilingType::App | FilingType::AddSite => {
            for (i, w) in ids.websites.iter().enumerate() {
                keys.extend(w.isp_wzid.map(|id| (2, id, site(i))));
            }
            for (i, a) in ids.apps.iter().enumerate() {
                keys.extend(a.isp_appid.map(|id| (2, id, format!("apps[{i}]"))));
            }
        }
        FilingType::AddAccess => {
            for (i, w) in ids.websites.iter().enumerate() {
                keys.extend(w.isp_jrid.map(|id| (3, id, site(i))));
            }
        }
        FilingType::ChangeSubject | FilingType::ChangeSite | FilingType::ChangeAccess => {
            keys.extend(ids.ztid.map(|id| (4, id, "subject".to_owned())))
        }
        FilingType::CancelSubject => keys.extend(ids.ztid.map(|id| (6, id, "subject".to_owned()))),
        FilingType::CancelSite => {
            for (i, w) in ids.websites.iter().enumerate() {
                keys.extend(w.wzid.map(|id| (7, id, site(i))));
            }
        }
        FilingType::CancelAccess => {
            for (i, w) in ids.websites.iter().enumerate() {
                keys.extend(w.jrid.map(|id| (5, id, site(i))));
            }
        }
    }
    keys
}

/// Every id an attempt uses, for matching BASJ records back to the filing.
fn id_keys(ids: &RecordIds) -> Vec<(&'static str, i64, String)> {
    let mut out = Vec::new();
    let subject = || "subject".to_owned();
    out.extend(ids.isp_ztid.map(|v| ("isp_ztid", v, subject())));
    out.extend(ids.ztid.map(|v| ("ztid", v, subject())));
    for (i, w) in ids.websites.iter().enumerate() {
        let part = format!("websites[{i}]");
        out.extend(w.isp_wzid.map(|v| ("isp_wzid", v, part.clone())));
        out.extend(w.wzid.map(|v| ("wzid", v, part.clone())));
        out.extend(w.isp_jrid.map(|v| ("isp_jrid", v, part.clone())));
        out.extend(w.jrid.map(|v| ("jrid", v, part.clone())));
    }
    for (i, a) in ids.apps.iter().enumerate() {
        let part = format!("apps[{i}]");
        out.extend(a.isp_appid.map(|v| ("isp_appid", v, part.clone())));
        out.extend(a.appid.map(|v| ("appid", v, part.clone())));
        out.extend(a.isp_jrid.map(|v| ("isp_jrid", v, part.clone())));
        out.extend(a.jrid.map(|v| ("jrid", v, part.clone())));
    }
    out
}

fn preflight_reason(code: &str, field: &str, message: String) -> Reason {
    Reason {
        source: "preflight".into(),
        code: json!(code),
        field: Some(field.to_owned()),
        message,
    }
}

impl Gateway {
    async fn preload_registry(
        &self,
        province: &str,
        filings: &[QueuedFiling],
    ) -> Result<Preloaded, PipelineError> {
        let mut pre = Preloaded::default();
        let mut seen = HashSet::new();
        let numbers: Vec<&str> = filings
            .iter()
            .flat_map(|q| record_numbers(&q.filing))
            .filter(|n| seen.insert(*n))
            .collect();
        let mut entries = self.store.registry_lookup_many(province, &numbers).await?;
        {
            for number in numbers {
                match entries.remove(number) {
                    Some(RegistryEntry::Subject(s)) => {
                        pre.subjects.insert(
                            number.to_owned(),
                            RegSubject {
                                ztid: s.ztid,
                                isp_ztid: s.isp_ztid,
                            },
                        );
                    }
                    Some(RegistryEntry::Website { website: w, .. }) => {
                        pre.websites.insert(
                            number.to_owned(),
                            RegWebsite {
                                wzid: w.wzid,
                                isp_wzid: w.isp_wzid,
                                domains: w
                                    .domains
                                    .iter()
                                    .map(|d| RegDomain {
                                        ym: d.ym.clone(),
                                        ymid: d.ymid,
                                        isp_ymid: d.isp_ymid,
                                    })
                                    .collect(),
                                accesses: reg_accesses(&w.accesses),
                            },
                        );
                    }
                    Some(RegistryEntry::App { app: a, .. }) => {
                        pre.apps.insert(
                            number.to_owned(),
                            RegApp {
                                appid: a.appid,
                                isp_appid: a.isp_appid,
                                accesses: reg_accesses(&a.accesses),
                            },
                        );
                    }
                    None => {}
                }
            }
        }
        Ok(pre)
    }

    /// Reads and prepares a filing's attachments; findings for the ones that cannot be sent.
    fn prepare_attachments(&self, f: &Filing) -> (Vec<PreparedAttachment>, Vec<Reason>) {
        let cfg = &self.settings.attachments;
        let mut prepared = Vec::with_capacity(f.attachments.len());
        let mut findings = Vec::new();
        for (index, a) in f.attachments.iter().enumerate() {
            let field = format!("attachments[{index}].path");
            let (Some(kind), Some(path)) = (a.kind, a.path.as_deref()) else {
                findings.push(preflight_reason(
                    "ATTACHMENT_INCOMPLETE",
                    &format!("attachments[{index}]"),
                    "attachment needs a kind and a path".into(),
                ));
                continue;
            };
            let full = cfg.dir.join(path);
            let bytes = match std::fs::read(&full) {
                Ok(b) => b,
                Err(e) => {
                    findings.push(preflight_reason(
                        "ATTACHMENT_MISSING",
                        &field,
                        format!("cannot read the attachment file: {e}"),
                    ));
                    continue;
                }
            };
            match self.prepared.take_or_prepare(
                &bytes,
                attachments::max_jpeg_bytes(kind),
                cfg.min_width,
                cfg.min_height,
            ) {
                Ok(jpeg) => prepared.push(PreparedAttachment {
                    index,
                    jpeg_base64: B64.encode(jpeg),
                }),
                Err(e) => findings.push(preflight_reason(
                    "ATTACHMENT_UNUSABLE",
                    &field,
                    e.to_string(),
                )),
            }
        }
        (prepared, findings)
    }

    /// Builds the next file for a bureau from its queue, or `None` when nothing is queued.
    pub(crate) async fn build_batch(
        &self,
        province: &str,
        report: &mut CycleReport,
    ) -> Result<Option<BuiltBatch>, PipelineError> {
        let max_records = self.settings.batch_size(province);
        let max_bytes = self.settings.batch.max_bytes;
        let bureau = self.store.bureau(province).await?;
        let endpoint = self.settings.endpoint(province);
        let opts = BuildOptions {
            isp_id: endpoint.isp_id,
            app_extension: endpoint.has_extension("app"),
        };
        let codes = self.code_tables(province).await?;
        let queued = self
            .store
            .lease_queued(
                province,
                self.instance(),
                max_records as i64 * 2,
                self.lease_ms(),
            )
            .await?;
        if queued.is_empty() {
            return Ok(None);
        }
        let registry = self.preload_registry(province, &queued).await?;
        let mut open: HashSet<(i64, i64)> =
            self.store.open_keys(province).await?.into_iter().collect();

        struct Candidate {
            q: QueuedFiling,
            ids: RecordIds,
            prepared: Vec<PreparedAttachment>,
        }
        let mut chosen: Vec<Candidate> = Vec::new();
        let mut records = 0usize;
        let mut bytes_estimate = 0usize;
        // Count the ids each filing needs, then reserve them for the whole batch at once
        // (ids of filings left for a later file are skipped, never reused).
        let dry: Vec<Result<i64, Vec<crate::datafile::Finding>>> = queued
            .iter()
            .map(|q| {
                let mut needed = 0i64;
                ids::plan_ids(&q.filing, &registry, &mut || {
                    needed += 1;
                    needed
                })
                .map(|_| needed.max(1))
            })
            .collect();
        let total: i64 = dry.iter().flatten().sum();
        let mut next_id = if total > 0 {
            self.store.allocate_provider_ids(province, total).await?
        } else {
            0
        };
        for (q, plan_dry) in queued.into_iter().zip(dry) {
            let f = &q.filing;
            let n = upload::record_count(f);
            if records + n > max_records {
                break;
            }
            // The real plan, on this filing's share of the reserved ids (it cannot fail where
            // the dry run did not: same filing, same registry).
            let plan = plan_dry.and_then(|needed| {
                let mut next = next_id;
                next_id += needed;
                ids::plan_ids(f, &registry, &mut || {
                    let v = next;
                    next += 1;
                    v
                })
            });
            let ids = match plan {
                Ok(ids) => ids,
                Err(findings) => {
                    let reasons = findings
                        .into_iter()
                        .map(|x| preflight_reason(&x.code, &x.field, x.message))
                        .collect::<Vec<_>>();
                    self.store.needs_correction(&f.id, &reasons).await?;
                    report.needs_correction += 1;
                    continue;
                }
            };
            // One unresolved change or cancellation per record (5.1): a later one waits.
            let keys = result_keys(f, &ids);
            let serial: Vec<(i64, i64)> = keys
                .iter()
                .filter(|(czlx, _, _)| matches!(czlx, 4..=7))
                .map(|(c, j, _)| (*c, *j))
                .collect();
            if serial.iter().any(|k| open.contains(k)) {
                debug!(province, filing = %f.id, "waits for an earlier change or cancellation of the same record");
                continue;
            }
            let (prepared, findings) = self.prepare_attachments(f);
            if !findings.is_empty() {
                self.store.needs_correction(&f.id, &findings).await?;
                report.needs_correction += 1;
                continue;
            }
            // Check that the data file can carry this filing on its own.
            let single = [BuildRecord {
                filing: f,
                ids: &ids,
                attachments: &prepared,
            }];
            if let Err(errors) = upload::build_upload_xml(&single, &codes, &opts) {
                let reasons = errors
                    .into_iter()
                    .map(|e| preflight_reason(&e.code, &e.field, e.message))
                    .collect::<Vec<_>>();
                self.store.needs_correction(&f.id, &reasons).await?;
                report.needs_correction += 1;
                continue;
            }
            let size: usize =
                prepared.iter().map(|p| p.jpeg_base64.len()).sum::<usize>() + 8 * 1024;
            if !chosen.is_empty() && bytes_estimate + size > max_bytes {
                break;
            }
            bytes_estimate += size;
            records += n;
            open.extend(serial);
            chosen.push(Candidate { q, ids, prepared });
        }
        if chosen.is_empty() {
            return Ok(None);
        }
        // Build; when the data file is over the size limit, leave the last filings for the
        // next file (they stay queued), or refuse a single filing that is too large alone.
        let gbk = loop {
            let build_records: Vec<BuildRecord<'_>> = chosen
                .iter()
                .map(|c| BuildRecord {
                    filing: &c.q.filing,
                    ids: &c.ids,
                    attachments: &c.prepared,
                })
                .collect();
            let xml =
                upload::build_upload_xml(&build_records, &codes, &opts).map_err(|errors| {
                    PipelineError::Bureau {
                        province: province.to_owned(),
                        message: format!(
                            "a batch of filings that each build alone failed to build together: {}",
                            errors
                                .iter()
                                .map(|e| e.to_string())
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    }
                })?;
            let gbk = package::encode_gbk(&xml).map_err(|e| PipelineError::Bureau {
                province: province.to_owned(),
                message: format!("data file is not GBK after the per-filing check: {e}"),
            })?;
            if gbk.len() <= max_bytes {
                break gbk;
            }
            if chosen.len() > 1 {
                warn!(
                    province,
                    bytes = gbk.len(),
                    "data file over the size limit; leaving the last filing for the next file"
                );
                if let Some(c) = chosen.pop() {
                    records -= upload::record_count(&c.q.filing);
                }
                continue;
            }
            if let Some(c) = chosen.pop() {
                let reason = preflight_reason(
                    "DATAFILE_TOO_LARGE",
                    "attachments",
                    format!(
                        "the filing alone makes a {} byte data file; the limit is {max_bytes}",
                        gbk.len()
                    ),
                );
                self.store
                    .needs_correction(&c.q.filing.id, &[reason])
                    .await?;
                report.needs_correction += 1;
            }
            return Ok(None);
        };
        let seq = bureau.last_sequence + 1;
        let file_name = format!("{}U{:010}.xml", endpoint.isp_id, seq);
        let started = std::time::Instant::now();
        let zip = package::zip_one(&file_name, &gbk).map_err(|e| PipelineError::Bureau {
            province: province.to_owned(),
            message: format!("zip: {e}"),
        })?;
        self.clock.add(
            super::Stage::Package,
            started.elapsed(),
            0,
            gbk.len() as u64,
        );
        let mut attempts = Vec::with_capacity(chosen.len());
        for c in &chosen {
            attempts.push(NewAttempt {
                filing_id: c.q.filing.id.clone(),
                revision: c.q.revision,
                attempt_no: c.q.attempts + 1,
                ids_json: serde_json::to_string(&c.ids).unwrap_or_default(),
                records: result_keys(&c.q.filing, &c.ids),
                id_keys: id_keys(&c.ids),
            });
        }
        debug!(
            province,
            data_sequence = seq,
            filings = attempts.len(),
            records,
            "built upload file"
        );
        Ok(Some(BuiltBatch {
            expected_last: bureau.last_sequence,
            file: NewUploadFile {
                data_sequence: seq,
                file_name,
                zip,
                record_count: records as i64,
            },
            attempts,
        }))
    }
}
