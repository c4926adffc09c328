//! Submitting to one bureau: the ordered upload stream. Unconfirmed files go first (same
//! bytes, same dataSequence), then new batches are claimed and stored before they are sent.
//! Only the holder of the bureau's lease sends (one sender per bureau across instances); a
//! file whose sender died is adopted and reconciled with `isp_querypreviousupload`.

use tracing::{debug, info, warn};

use super::{BureauGuard, CycleReport, Gateway, PipelineError, Stage};
use crate::bureau::client::{ClientError, FaultClass, UploadOutcome};
use crate::package;
use crate::store::{PendingUpload, StoreError, UploadFile};

impl Gateway {
    /// Everything one bureau needs this cycle: resend unconfirmed files, then claim and send
    /// new batches until its queue is empty — or until shutdown, checked between files. Does
    /// nothing while another instance holds the bureau.
    #[tracing::instrument(name = "submit", skip(self))]
    pub async fn submit_province(&self, province: &str) -> Result<CycleReport, PipelineError> {
        let mut report = CycleReport::default();
        let Some(guard) = self.hold_bureau(province).await? else {
            return Ok(report);
        };
        let bureau = self.store.bureau(province).await?;
        crate::telemetry::set_circuit(province, bureau.paused_reason.is_some());
        if let Some(reason) = bureau.paused_reason {
            warn!(province, reason = %reason, "bureau paused; not submitting");
            return Ok(report);
        }
        if !bureau.codes_received && !self.settings.bureau.allow_default_codes {
            // Section 7.1: run the bureau's pending downloads (its JCDM) before the first upload.
            report.merge(self.poll_province_locked(province).await?);
            if !self.store.bureau(province).await?.codes_received {
                info!(
                    province,
                    "waiting for the bureau's code tables (JCDM) before uploading"
                );
                return Ok(report);
            }
        }
        let mut queue_empty = false;
        loop {
            if self.is_stopping() {
                info!(province, "shutting down; no more claims or sends");
                break;
            }
            guard.check()?;
            match self
                .store
                .adopt_pending_upload(province, &self.instance, self.lease_ms())
                .await?
            {
                PendingUpload::File { file, adopted_from } => {
                    if adopted_from.is_some() && self.reconcile(province, &file).await? {
                        continue;
                    }
                    let started = std::time::Instant::now();
                    // Build ahead: while this file is in flight, the next batch is claimed and
                    // stored (numbered after it), so the stream does not wait for a build. At
                    // most one file ahead: each turn sends one and stores one.
                    let mut ahead = CycleReport::default();
                    let (sent, claimed) =
                        tokio::join!(self.send_file(&guard, province, &file), async {
                            if queue_empty || self.is_stopping() {
                                return Ok(false);
                            }
                            self.claim_locked(&guard, province, &mut ahead).await
                        });
                    report.merge(ahead);
                    let filings = sent?;
                    queue_empty |= !claimed?;
                    self.clock.add(
                        Stage::Upload,
                        started.elapsed(),
                        filings as u64,
                        file.zip.len() as u64,
                    );
                    report.files_sent += 1;
                    report.filings_sent += filings;
                    continue;
                }
                PendingUpload::Busy { owner } => {
                    // Its sender may still be sending it; nothing later may go first.
                    info!(province, owner = %owner, "oldest unconfirmed file is still leased by another instance; waiting");
                    break;
                }
                PendingUpload::None => {}
            }
            if queue_empty || !self.claim_locked(&guard, province, &mut report).await? {
                break;
            }
        }
        Ok(report)
    }

    /// Reconcile of a file whose sender died (its outcome is unknown): when the bureau's last
    /// accepted dataSequence is at or past the file, the file arrived; otherwise it is sent
    /// again, the same bytes with the same number. Returns whether it was found arrived.
    async fn reconcile(&self, province: &str, file: &UploadFile) -> Result<bool, PipelineError> {
        let client = self.client(province).await?;
        let previous = client.query_previous_upload().await?;
        if previous.data_sequence >= file.data_sequence {
            info!(
                province,
                data_sequence = file.data_sequence,
                bureau_last = previous.data_sequence,
                "adopted file had arrived"
            );
            self.store.mark_arrived(file.id, "reconciled").await?;
            return Ok(true);
        }
        info!(
            province,
            data_sequence = file.data_sequence,
            bureau_last = previous.data_sequence,
            "adopted file had not arrived; sending it again"
        );
        Ok(false)
    }

    /// Claims the next batch of a bureau's queue and stores its file (one transaction, nothing
    /// sent). Returns false when the queue had nothing to claim.
    pub async fn claim(
        &self,
        province: &str,
        report: &mut CycleReport,
    ) -> Result<bool, PipelineError> {
        let Some(guard) = self.hold_bureau(province).await? else {
            return Ok(false);
        };
        self.claim_locked(&guard, province, report).await
    }

    async fn claim_locked(
        &self,
        guard: &BureauGuard,
        province: &str,
        report: &mut CycleReport,
    ) -> Result<bool, PipelineError> {
        for _ in 0..3 {
            guard.check()?;
            let _slot = self
                .build_slots
                .acquire()
                .await
                .map_err(|_| PipelineError::Config("build slots closed".into()))?;
            let started = std::time::Instant::now();
            let built = self.build_batch(province, report).await;
            if let Ok(Some(b)) = &built {
                self.clock.add(
                    Stage::Build,
                    started.elapsed(),
                    b.attempts.len() as u64,
                    b.file.zip.len() as u64,
                );
            }
            let batch = match built {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    self.store
                        .release_queued_leases(province, &self.instance)
                        .await?;
                    return Ok(false);
                }
                Err(e) => {
                    self.store
                        .release_queued_leases(province, &self.instance)
                        .await?;
                    return Err(e);
                }
            };
            let started = std::time::Instant::now();
            let stored = self
                .store
                .store_upload(
                    &guard.lease,
                    batch.expected_last,
                    &batch.file,
                    &batch.attempts,
                    self.lease_ms(),
                )
                .await;
            // Leased filings the batch did not take go back to the queue.
            self.store
                .release_queued_leases(province, &self.instance)
                .await?;
            match stored {
                Ok(_) => {
                    self.clock.add(
                        Stage::Claim,
                        started.elapsed(),
                        batch.attempts.len() as u64,
                        batch.file.zip.len() as u64,
                    );
                    for a in &batch.attempts {
                        tracing::debug_span!("filing", filing = %a.filing_id, province, data_sequence = batch.file.data_sequence)
                            .in_scope(|| debug!(attempt = a.attempt_no, "claimed into an upload file"));
                    }
                    return Ok(true);
                }
                Err(StoreError::StreamMoved { .. }) => {
                    // Something changed under the claim (an admin hold, a correction): nothing
                    // was sent; build again from the current queue.
                    warn!(province, "claim lost a race; rebuilding the batch");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(PipelineError::Bureau {
            province: province.to_owned(),
            message: "the queue kept changing under three claims in a row; trying next cycle"
                .into(),
        })
    }

    /// Sends one stored file exactly once; returns how many filings it carried.
    #[tracing::instrument(name = "upload", skip(self, guard, file), fields(data_sequence = file.data_sequence))]
    async fn send_file(
        &self,
        guard: &BureauGuard,
        province: &str,
        file: &UploadFile,
    ) -> Result<usize, PipelineError> {
        let client = self.client(province).await?;
        let started = std::time::Instant::now();
        let packed = package::pack_zip(file.zip.clone(), client.account().aes.as_ref());
        self.clock.add(Stage::Package, started.elapsed(), 0, 0);
        guard.check()?;
        self.store.mark_sent(file.id, &guard.lease).await?;
        let mut gap_repairs = 0;
        loop {
            let started = std::time::Instant::now();
            let sent = client
                .upload_exactly_once(file.data_sequence, &packed)
                .await;
            crate::telemetry::bureau_latency(province, "upload", started.elapsed());
            match sent {
                Ok(outcome) => {
                    let how = match outcome {
                        UploadOutcome::Accepted => "accepted",
                        UploadOutcome::AlreadyArrived => "reconciled",
                    };
                    info!(province, data_sequence = file.data_sequence, file = %file.file_name, how, "upload arrived");
                    self.store.mark_arrived(file.id, how).await?;
                    let filings = self.store.filings_in_upload(file.id).await?;
                    crate::telemetry::count_submissions(province, how, filings);
                    return Ok(filings);
                }
                Err(e) => match e.class() {
                    FaultClass::Gap(missing) if gap_repairs < 3 => {
                        gap_repairs += 1;
                        self.repair_gap(province, &missing).await?;
                    }
                    FaultClass::Configuration
                    | FaultClass::Split
                    | FaultClass::Gap(_)
                    | FaultClass::Rebuild => {
                        self.pause(province, &e).await?;
                        return Err(e.into());
                    }
                    _ => {
                        // Still unknown or refused for now: the file stays pending with its
                        // number; the next cycle reconciles and sends the same bytes.
                        crate::telemetry::count_error(province, "upload");
                        self.store
                            .alarm(
                                Some(province),
                                None,
                                "upload_failed",
                                serde_json::json!({
                                    "dataSequence": file.data_sequence,
                                    "error": e.to_string(),
                                }),
                            )
                            .await?;
                        return Err(e.into());
                    }
                },
            }
        }
    }

    /// msg_code 14: the bureau lacks earlier numbers. Resend each missing stored file (same
    /// bytes, same number); a number the gateway never stored is an alarm, never skipped.
    async fn repair_gap(&self, province: &str, missing: &[i64]) -> Result<(), PipelineError> {
        let client = self.client(province).await?;
        for seq in missing {
            let Some(stored) = self.store.upload_by_sequence(province, *seq).await? else {
                let message = format!(
                    "the bureau reports dataSequence {seq} missing and the gateway never stored it"
                );
                self.store.pause_bureau(province, &message).await?;
                return Err(PipelineError::Bureau {
                    province: province.to_owned(),
                    message,
                });
            };
            warn!(
                province,
                data_sequence = seq,
                "bureau reports a gap; resending the stored file"
            );
            let packed = package::pack_zip(stored.zip.clone(), client.account().aes.as_ref());
            client
                .upload_exactly_once(stored.data_sequence, &packed)
                .await?;
            self.store.mark_arrived(stored.id, "gap_repaired").await?;
        }
        Ok(())
    }

    async fn pause(&self, province: &str, e: &ClientError) -> Result<(), PipelineError> {
        warn!(province, error = %e, "pausing bureau");
        crate::telemetry::count_error(province, "paused");
        crate::telemetry::set_circuit(province, true);
        self.store.pause_bureau(province, &e.to_string()).await?;
        Ok(())
    }
}
