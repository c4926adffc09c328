//! Submitting to one bureau: the ordered upload stream. Unconfirmed files go first (same
//! bytes, same dataSequence), then new batches are claimed and stored before they are sent.

use tracing::{debug, info, warn};

use super::{CycleReport, Gateway, PipelineError};
use crate::bureau::client::{ClientError, FaultClass, UploadOutcome};
use crate::package;
use crate::store::{StoreError, UploadFile};

impl Gateway {
    /// Everything one bureau needs this cycle: resend unconfirmed files, then claim and send
    /// new batches until its queue is empty — or until shutdown, checked between files.
    #[tracing::instrument(name = "submit", skip(self))]
    pub async fn submit_province(&self, province: &str) -> Result<CycleReport, PipelineError> {
        let lock = self.bureau_lock(province).await;
        let _sender = lock.lock().await;
        let mut report = CycleReport::default();
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
        loop {
            if self.is_stopping() {
                info!(province, "shutting down; no more claims or sends");
                break;
            }
            if let Some(file) = self.store.pending_upload(province).await? {
                let filings = self.send_file(province, &file).await?;
                report.files_sent += 1;
                report.filings_sent += filings;
                continue;
            }
            if !self.claim(province, &mut report).await? {
                break;
            }
        }
        Ok(report)
    }

    /// Claims the next batch of a bureau's queue and stores its file (one transaction, nothing
    /// sent). Returns false when the queue had nothing to claim.
    pub async fn claim(
        &self,
        province: &str,
        report: &mut CycleReport,
    ) -> Result<bool, PipelineError> {
        for _ in 0..3 {
            let Some(batch) = self.build_batch(province, report).await? else {
                return Ok(false);
            };
            match self
                .store
                .store_upload(province, batch.expected_last, &batch.file, &batch.attempts)
                .await
            {
                Ok(_) => {
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
    #[tracing::instrument(name = "upload", skip(self, file), fields(data_sequence = file.data_sequence))]
    async fn send_file(&self, province: &str, file: &UploadFile) -> Result<usize, PipelineError> {
        let client = self.client(province).await?;
        let packed = package::pack_zip(file.zip.clone(), client.account().aes.as_ref());
        self.store.mark_sent(file.id).await?;
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
