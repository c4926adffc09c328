//! Polling one bureau: download files while they come, apply each in one transaction (recorded
//! by name so a file served again changes nothing), then acknowledge it. A file that fails its
//! hash check or cannot be read is not acknowledged (the bureau serves it again) and raises an
//! alarm.

use tracing::{info, warn};

use super::{CycleReport, Gateway, PipelineError};
use crate::bureau::client::DownloadOutcome;
use crate::datafile::download::{self, DownloadFile, ResultPair, Verdict};
use crate::store::registry::{
    DownloadContent, PubAccess, PubApp, PubDomain, PubIp, PubSubject, PubWebsite, PublishedInput,
    ResultInput, VerdictKind,
};
use crate::store::{fmt_time, now};

fn verdict_name(v: VerdictKind) -> &'static str {
    match v {
        VerdictKind::Approved => "approved",
        VerdictKind::AwaitingSms => "awaiting_sms",
        VerdictKind::Expired => "expired",
        VerdictKind::Rejected => "rejected",
    }
}

fn result_input(pair: &ResultPair) -> ResultInput {
    let verdict = match pair.verdict() {
        Verdict::Approved => VerdictKind::Approved,
        Verdict::AwaitingSms { .. } => VerdictKind::AwaitingSms,
        Verdict::Expired => VerdictKind::Expired,
        Verdict::Rejected => VerdictKind::Rejected,
    };
    let shsj = (!pair.shsj.is_empty()).then_some(pair.shsj.as_str());
    ResultInput {
        czlx: Some(pair.operation()),
        jlid: pair.jlid,
        codes: pair
            .codes
            .iter()
            .map(|c| (c.jgdm, c.dmms.clone()))
            .collect(),
        shyj: pair.shyj.clone(),
        shsj: shsj.map(str::to_owned),
        verdict,
        decided_at: fmt_time(download::decided_at(shsj, now())),
        whole_file: if pair.is_whole_file() {
            pair.codes.iter().find_map(|c| c.dmms.clone())
        } else {
            None
        },
    }
}

fn accesses(list: &[download::PublishedAccess]) -> Vec<PubAccess> {
    list.iter()
        .map(|a| PubAccess {
            jrid: a.jrid,
            isp_jrid: a.isp_jrid,
            ips: a
                .ips
                .iter()
                .map(|ip| PubIp {
                    ip: ip.qsip,
                    ipid: Some(ip.ipid),
                    isp_ipid: ip.isp_ipid,
                })
                .collect(),
        })
        .collect()
}

fn content(part: DownloadFile) -> DownloadContent {
    match part {
        DownloadFile::Bajg(pairs) => {
            DownloadContent::Results(pairs.iter().map(result_input).collect())
        }
        DownloadFile::Basj(records) => DownloadContent::Published(
            records
                .into_iter()
                .map(|r| PublishedInput {
                    subject: PubSubject {
                        ztid: r.subject.ztid,
                        isp_ztid: r.subject.isp_ztid,
                        record_number: r.subject.record_number,
                    },
                    websites: r
                        .websites
                        .iter()
                        .map(|w| PubWebsite {
                            wzid: w.wzid,
                            isp_wzid: w.isp_wzid,
                            record_number: w.record_number.clone(),
                            domains: w
                                .domains
                                .iter()
                                .map(|d| PubDomain {
                                    ym: d.ym.clone(),
                                    ymid: d.ymid,
                                    isp_ymid: d.isp_ymid,
                                })
                                .collect(),
                            accesses: accesses(&w.accesses),
                        })
                        .collect(),
                    apps: r
                        .apps
                        .iter()
                        .map(|a| PubApp {
                            appid: a.appid,
                            isp_appid: a.isp_appid,
                            record_number: Some(a.record_number.clone()),
                            package_name: Some(a.package_name.clone()),
                            accesses: Vec::new(),
                        })
                        .collect(),
                })
                .collect(),
        ),
        DownloadFile::Zxsj(items) => {
            DownloadContent::Cancellations(items.iter().map(|c| (c.zxlb, c.jlid)).collect())
        }
        DownloadFile::Jcdm(tables) => DownloadContent::Codes(tables.to_jcdm_xml()),
        DownloadFile::Other { .. } => DownloadContent::Other,
    }
}

impl Gateway {
    /// Downloads, applies and acknowledges one bureau's pending files.
    #[tracing::instrument(name = "poll", skip(self))]
    pub async fn poll_province(&self, province: &str) -> Result<CycleReport, PipelineError> {
        let Some(_guard) = self.hold_bureau(province).await? else {
            // Another instance holds the bureau: its downloads and acks are that instance's.
            return Ok(CycleReport::default());
        };
        let started = std::time::Instant::now();
        let report = self.poll_province_locked(province).await?;
        self.clock.add(
            super::Stage::Poll,
            started.elapsed(),
            report.downloads_applied as u64,
            0,
        );
        Ok(report)
    }

    pub(crate) async fn poll_province_locked(
        &self,
        province: &str,
    ) -> Result<CycleReport, PipelineError> {
        let mut report = CycleReport::default();
        if let Some(reason) = self.store.bureau(province).await?.paused_reason {
            warn!(province, reason = %reason, "bureau paused; not polling");
            return Ok(report);
        }
        let client = self.client(province).await?;
        for _ in 0..self.settings.bureau.max_downloads_per_poll {
            let started = std::time::Instant::now();
            let downloaded = client.download().await;
            crate::telemetry::bureau_latency(province, "download", started.elapsed());
            let file = match downloaded? {
                DownloadOutcome::Nothing => {
                    // The bureau serves a file until it is acked: nothing left means every file
                    // applied here was acked, even one whose ack answer a crash cut off.
                    self.store.confirm_acked(province).await?;
                    break;
                }
                DownloadOutcome::File(f) => f,
            };
            let more = file.more;
            let name = file.file_name.clone();
            if self.store.download_applied(province, &name).await? {
                // Served again (our earlier ack was lost): it changed everything it will.
                client.download_ack(&name).await?;
                self.store.mark_acked(province, &name).await?;
                if !more {
                    break;
                }
                continue;
            }
            let (_, raw) = match client.unpack_download(&file) {
                Ok(x) => x,
                Err(e) => {
                    warn!(province, file = %name, error = %e, "downloaded file fails its checks; not acknowledged");
                    self.store
                        .alarm(
                            Some(province),
                            None,
                            "download_unreadable",
                            serde_json::json!({"file": name, "error": e.to_string()}),
                        )
                        .await?;
                    break;
                }
            };
            let parsed = match download::parse_download_bytes(&raw) {
                Ok(d) => d,
                Err(e) => {
                    warn!(province, file = %name, error = %e, "downloaded file cannot be parsed; not acknowledged");
                    self.store
                        .alarm(
                            Some(province),
                            None,
                            "download_malformed",
                            serde_json::json!({"file": name, "error": e.to_string()}),
                        )
                        .await?;
                    break;
                }
            };
            let parts: Vec<DownloadContent> = parsed.parts.into_iter().map(content).collect();
            for part in &parts {
                if let DownloadContent::Results(results) = part {
                    for r in results {
                        crate::telemetry::count_result(province, verdict_name(r.verdict));
                    }
                }
            }
            self.store
                .apply_download(province, &name, &raw, &parts)
                .await?;
            client.download_ack(&name).await?;
            self.store.mark_acked(province, &name).await?;
            report.downloads_applied += 1;
            info!(province, file = %name, kinds = %parts.iter().map(DownloadContent::kind).collect::<Vec<_>>().join(","), "applied download");
            if !more {
                break;
            }
        }
        Ok(report)
    }
}
