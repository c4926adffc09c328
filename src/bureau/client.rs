//! The HTTP client of one bureau account (bureau-protocol.md sections 1–6 and 8): signing every
//! call, size-capped streaming reads, fault classification, retries, and the exactly-once upload
//! rule of section 3. Every request — retries and reconciling queries included — first waits
//! for the bureau's [`Limiter`] (rate and concurrency), in `call_once`, the one
//! place requests go out.
//!
//! Owns: talking to a bureau and deciding what a `msg_code` or transport failure means for the
//! call. Must not touch the store, the pipeline's state machine or XML structure (`wire` does
//! that), and never renumbers a file: the caller gives the `dataSequence` and the packed bytes,
//! this module sends exactly those. Logs carry operation, province, dataSequence, msg_code and
//! latency only — never the password, `pwdHash` or `beianInfo`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::{Instrument, debug, debug_span, warn};

use crate::bureau::limiter::Limiter;
use crate::bureau::retry::{RetryPolicy, Schedule};
use crate::bureau::wire::{
    self, Auth, HASH_MD5, Operation, Request, ReturnDoc, StatusInfo, WireError,
};
use crate::package::{self, AesKey, PackageError, Packed};

/// A downloaded data file larger than this once unzipped is refused (uploads are capped at 50 MB
/// by the interface; this leaves room without inviting zip bombs).
pub const MAX_UNPACKED_BYTES: usize = 128 * 1024 * 1024;

/// A credential that never prints.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// One bureau account (section 2).
#[derive(Clone, Debug)]
pub struct BureauAccount {
    /// GB/T 2260 province code, e.g. `110000`.
    pub province: String,
    /// The bureau's base URL, `{province}` already substituted (a left-over placeholder is
    /// substituted again with `province`).
    pub base_url: String,
    pub isp_id: i64,
    pub user_name: String,
    pub password: Secret,
    /// `Some` → uploads use encryptAlgorithm 1 with this key; `None` → 0.
    pub aes: Option<AesKey>,
    /// The operation namespace; [`wire::DEFAULT_NAMESPACE`] unless the bureau's config says otherwise.
    pub soap_namespace: String,
}

/// Timeouts, answer cap and retry budget, shared by every call of a client.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ClientConfig {
    /// Whole-call limit (connect, send, answer). Seconds as a number, or `"500ms"`, `"30s"`, `"5m"`.
    #[serde(deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// Answers larger than this are refused while streaming.
    pub max_answer_bytes: usize,
    #[serde(deserialize_with = "de_duration")]
    pub retry_initial: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub retry_max_interval: Duration,
    /// Time budget of one logical call including all its retries.
    #[serde(deserialize_with = "de_duration")]
    pub retry_max_elapsed: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(120),
            // A 50 MB data file is about 67 MB in base64.
            max_answer_bytes: 96 * 1024 * 1024,
            retry_initial: Duration::from_secs(2),
            retry_max_interval: Duration::from_secs(300),
            retry_max_elapsed: Duration::from_secs(1800),
        }
    }
}

impl ClientConfig {
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial: self.retry_initial,
            max_interval: self.retry_max_interval,
            max_elapsed: self.retry_max_elapsed,
        }
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(f64),
        Text(String),
    }
    let secs = match Raw::deserialize(d)? {
        Raw::Secs(s) => s,
        Raw::Text(t) => {
            let t = t.trim();
            let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
                (n, 0.001)
            } else if let Some(n) = t.strip_suffix('s') {
                (n, 1.0)
            } else if let Some(n) = t.strip_suffix('m') {
                (n, 60.0)
            } else if let Some(n) = t.strip_suffix('h') {
                (n, 3600.0)
            } else {
                (t, 1.0)
            };
            number
                .trim()
                .parse::<f64>()
                .map_err(|_| serde::de::Error::custom(format!("not a duration: {t:?}")))?
                * scale
        }
    };
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

/// What a failed call means for the caller (section 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultClass {
    /// 15, 20, 901, 902 and transport faults (non-200, SOAP Fault, timeout, reset, malformed or
    /// oversized answer): back off and retry the same thing.
    Transient,
    /// 4, 5, 12, 13, 16, 19, 22 and local configuration faults: stop that bureau, alarm.
    Configuration,
    /// 6, 7, 8: rebuild the file once, then alarm.
    Rebuild,
    /// 14: these numbers are missing at the bureau; resend those stored files, never skip.
    Gap(Vec<i64>),
    /// 17, 18: split the file.
    Split,
    /// 999 on an upload that had not arrived: the number is at or below the bureau's last.
    AtOrBelowLast,
    /// A downloaded file failed its hash check or could not be unpacked: do not ack, alarm.
    Integrity,
    /// Anything else (9/10/11, 21, an unexpected code, a reconcile mismatch).
    Other,
}

impl FaultClass {
    /// The class of a refusing `msg_code` (not 0–3, which are successes for some calls).
    pub fn of_msg_code(code: i64, data_sequences: &[i64]) -> FaultClass {
        match code {
            15 | 20 | 901 | 902 => FaultClass::Transient,
            4 | 5 | 12 | 13 | 16 | 19 | 22 => FaultClass::Configuration,
            6..=8 => FaultClass::Rebuild,
            14 => FaultClass::Gap(data_sequences.to_vec()),
            17 | 18 => FaultClass::Split,
            999 => FaultClass::AtOrBelowLast,
            _ => FaultClass::Other,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bureau {province}: configuration: {reason}")]
    Config { province: String, reason: String },
    #[error("{operation} to bureau {province}: transport failure: {detail}")]
    Transport {
        operation: Operation,
        province: String,
        detail: String,
        timed_out: bool,
    },
    #[error("{operation} to bureau {province}: HTTP status {status}")]
    HttpStatus {
        operation: Operation,
        province: String,
        status: u16,
    },
    #[error("{operation} to bureau {province}: answer larger than {limit} bytes refused")]
    TooLarge {
        operation: Operation,
        province: String,
        limit: usize,
    },
    #[error("{operation} to bureau {province}: {source}")]
    Wire {
        operation: Operation,
        province: String,
        #[source]
        source: WireError,
    },
    #[error("{operation} refused by bureau {province}: msg_code {code} ({class:?}): {msg}")]
    Fault {
        operation: Operation,
        province: String,
        code: i64,
        msg: String,
        class: FaultClass,
    },
    #[error(
        "upload of dataSequence {data_sequence} to bureau {province} refused with msg_code 999 \
         and the bureau's last accepted dataSequence is {bureau_last}: {msg}"
    )]
    AtOrBelowLast {
        province: String,
        data_sequence: i64,
        bureau_last: i64,
        msg: String,
    },
    #[error(
        "upload of dataSequence {data_sequence} to bureau {province} had an unknown outcome and the \
         bureau's last accepted dataSequence is {bureau_last}, neither it nor one less: not resent"
    )]
    ReconcileMismatch {
        province: String,
        data_sequence: i64,
        bureau_last: i64,
    },
    #[error(
        "{operation} to bureau {province}: gave up after {attempts} attempts in {elapsed:?}; \
         last cause: {last}"
    )]
    RetriesExhausted {
        operation: Operation,
        province: String,
        attempts: u32,
        elapsed: Duration,
        last: Box<ClientError>,
    },
    #[error(
        "downloaded file {file_name} from bureau {province} fails its hash check \
         (beianInfoHash {expected}, computed {actual}): not to be acked"
    )]
    DownloadHashMismatch {
        province: String,
        file_name: String,
        expected: String,
        actual: String,
    },
    #[error("downloaded file {file_name} from bureau {province} cannot be unpacked: {reason}")]
    Unpack {
        province: String,
        file_name: String,
        reason: String,
    },
}

impl ClientError {
    pub fn class(&self) -> FaultClass {
        match self {
            ClientError::Config { .. } => FaultClass::Configuration,
            ClientError::Transport { .. }
            | ClientError::HttpStatus { .. }
            | ClientError::TooLarge { .. }
            | ClientError::Wire { .. }
            | ClientError::RetriesExhausted { .. } => FaultClass::Transient,
            ClientError::Fault { class, .. } => class.clone(),
            ClientError::AtOrBelowLast { .. } => FaultClass::AtOrBelowLast,
            ClientError::ReconcileMismatch { .. } => FaultClass::Other,
            ClientError::DownloadHashMismatch { .. } | ClientError::Unpack { .. } => {
                FaultClass::Integrity
            }
        }
    }

    /// The request may or may not have been processed: nothing came back that says which.
    pub fn is_unknown_outcome(&self) -> bool {
        matches!(
            self,
            ClientError::Transport { .. }
                | ClientError::HttpStatus { .. }
                | ClientError::TooLarge { .. }
                | ClientError::Wire { .. }
        )
    }

    /// The bureau's `msg_code`, when the error is a refusal.
    pub fn msg_code(&self) -> Option<i64> {
        match self {
            ClientError::Fault { code, .. } => Some(*code),
            ClientError::AtOrBelowLast { .. } => Some(999),
            _ => None,
        }
    }
}

/// The bureau's last accepted upload (section 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousUpload {
    /// 0 when none was accepted yet.
    pub data_sequence: i64,
    pub file_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOutcome {
    /// msg_code 0 to this very send.
    Accepted,
    /// An earlier send whose answer was lost (or refused as 999) had arrived: the bureau's last
    /// accepted dataSequence is this file's.
    AlreadyArrived,
}

/// One file offered by `isp_download` (section 5).
#[derive(Clone, PartialEq, Eq)]
pub struct DownloadedFile {
    /// msg_code 3: more files wait.
    pub more: bool,
    /// `return_FileName`, the name to ack.
    pub file_name: String,
    pub encrypt_algorithm: i64,
    pub hash_algorithm: i64,
    pub compression_format: i64,
    pub beian_info: String,
    pub beian_info_hash: String,
}

impl std::fmt::Debug for DownloadedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadedFile")
            .field("more", &self.more)
            .field("file_name", &self.file_name)
            .field("encrypt_algorithm", &self.encrypt_algorithm)
            .field("beian_info_len", &self.beian_info.len())
            .field("beian_info_hash", &self.beian_info_hash)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadOutcome {
    /// msg_code 2 (or 1 without a file).
    Nothing,
    File(DownloadedFile),
}

/// Why an upload must ask `isp_querypreviousupload` before anything else.
enum Reconcile {
    /// The send's outcome is unknown; the error is kept as the cause to report.
    Unknown(ClientError),
    /// The bureau answered 999.
    AtOrBelow { msg: String },
}

/// The client of one bureau account.
#[derive(Debug, Clone)]
pub struct BureauClient {
    account: BureauAccount,
    config: ClientConfig,
    base_url: String,
    http: reqwest::Client,
    /// Shared with the gateway, which holds the bureau's limiter off when it takes the lease.
    limiter: Arc<Limiter>,
}

impl BureauClient {
    /// Checks the account (HTTPS, or plain HTTP to loopback only; a GBK-encodable password) and
    /// builds the HTTP client, unlimited until [`BureauClient::with_limiter`].
    pub fn new(account: BureauAccount, config: ClientConfig) -> Result<Self, ClientError> {
        let config_error = |reason: String| ClientError::Config {
            province: account.province.clone(),
            reason,
        };
        let base_url = account
            .base_url
            .replace("{province}", &account.province)
            .trim_end_matches('/')
            .to_owned();
        let url = reqwest::Url::parse(&base_url)
            .map_err(|e| config_error(format!("base URL {base_url:?} does not parse: {e}")))?;
        let loopback = url.host_str().is_some_and(|host| {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            other => {
                return Err(config_error(format!(
                    "base URL scheme {other:?}: bureaus are reached over HTTPS (plain HTTP only to loopback)"
                )));
            }
        }
        if package::encode_gbk(account.password.expose()).is_err() {
            return Err(config_error(
                "the password has a character GBK cannot represent".to_owned(),
            ));
        }
        if account.soap_namespace.is_empty() {
            return Err(config_error("soap_namespace is empty".to_owned()));
        }
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(30)))
            .build()
            .map_err(|e| config_error(format!("HTTP client: {}", error_chain(&e))))?;
        let limiter = Arc::new(Limiter::unlimited(&account.province));
        Ok(Self {
            account,
            config,
            base_url,
            http,
            limiter,
        })
    }

    /// Every request of this client waits for `limiter` first.
    pub fn with_limiter(mut self, limiter: Arc<Limiter>) -> Self {
        self.limiter = limiter;
        self
    }

    pub fn account(&self) -> &BureauAccount {
        &self.account
    }

    /// Where `op` is posted.
    pub fn endpoint(&self, op: Operation) -> String {
        format!("{}{}", self.base_url, op.service_path())
    }

    /// `isp_querypreviousupload`, retried while transient.
    pub async fn query_previous_upload(&self) -> Result<PreviousUpload, ClientError> {
        let request = Request::QueryPreviousUpload {
            hash_algorithm: HASH_MD5,
        };
        self.call_retrying(&request, |doc| self.previous_of(doc))
            .await
    }

    /// Sends `packed` as `data_sequence`, exactly once (section 3): definite transient refusals
    /// are resent after a backoff; an unknown outcome (or 999) is reconciled through
    /// `isp_querypreviousupload` before anything is resent. Never renumbers.
    pub async fn upload_exactly_once(
        &self,
        data_sequence: i64,
        packed: &Packed,
    ) -> Result<UploadOutcome, ClientError> {
        let span = debug_span!(
            "bureau_upload",
            province = %self.account.province,
            data_sequence
        );
        self.upload_loop(data_sequence, packed)
            .instrument(span)
            .await
    }

    async fn upload_loop(
        &self,
        data_sequence: i64,
        packed: &Packed,
    ) -> Result<UploadOutcome, ClientError> {
        let upload = Request::Upload {
            beian_info: &packed.beian_info,
            beian_info_hash: &packed.beian_info_hash,
            data_sequence,
            encrypt_algorithm: i64::from(self.account.aes.is_some()),
            hash_algorithm: HASH_MD5,
            compression_format: 0,
        };
        let query = Request::QueryPreviousUpload {
            hash_algorithm: HASH_MD5,
        };
        let mut schedule = self.config.retry_policy().start();
        let mut reconcile: Option<Reconcile> = None;
        loop {
            let cause = match reconcile.take() {
                None => match self.call_once(&upload).await {
                    Ok(doc) if doc.msg_code == 0 => return Ok(UploadOutcome::Accepted),
                    Ok(doc) if doc.msg_code == 999 => {
                        // Ask at once: the number may be ours from a send whose answer was lost.
                        reconcile = Some(Reconcile::AtOrBelow { msg: doc.msg });
                        continue;
                    }
                    Ok(doc) => {
                        let refusal = self.refusal(Operation::Upload, doc);
                        if refusal.class() != FaultClass::Transient {
                            return Err(refusal);
                        }
                        refusal
                    }
                    Err(e) if e.is_unknown_outcome() => {
                        warn!(
                            province = %self.account.province,
                            data_sequence,
                            error = %e,
                            "upload outcome unknown; asking isp_querypreviousupload"
                        );
                        reconcile = Some(Reconcile::Unknown(e));
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                Some(why) => {
                    let asked = self.call_once(&query).await;
                    match asked.and_then(|doc| self.previous_of(doc)) {
                        Ok(prev) if prev.data_sequence == data_sequence => {
                            debug!(data_sequence, "bureau already holds this dataSequence");
                            return Ok(UploadOutcome::AlreadyArrived);
                        }
                        Ok(prev) => match why {
                            Reconcile::Unknown(cause)
                                if prev.data_sequence == data_sequence - 1 =>
                            {
                                debug!(
                                    data_sequence,
                                    "bureau's last is one less; resending the same file"
                                );
                                cause
                            }
                            Reconcile::Unknown(_) => {
                                return Err(ClientError::ReconcileMismatch {
                                    province: self.account.province.clone(),
                                    data_sequence,
                                    bureau_last: prev.data_sequence,
                                });
                            }
                            Reconcile::AtOrBelow { msg } => {
                                return Err(ClientError::AtOrBelowLast {
                                    province: self.account.province.clone(),
                                    data_sequence,
                                    bureau_last: prev.data_sequence,
                                    msg,
                                });
                            }
                        },
                        Err(e) if e.class() == FaultClass::Transient => {
                            // Still unknown: ask again later, never resend blind.
                            reconcile = Some(why);
                            e
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            if !schedule.wait().await {
                return Err(self.exhausted(Operation::Upload, &schedule, cause));
            }
        }
    }

    /// `isp_download` (section 5), retried while transient.
    pub async fn download(&self) -> Result<DownloadOutcome, ClientError> {
        let request = Request::Download {
            hash_algorithm: HASH_MD5,
        };
        self.call_retrying(&request, |doc| self.download_of(doc))
            .await
    }

    /// Reverses the packaging of a downloaded file: the zip entry's name and its GBK bytes. A
    /// hash mismatch is [`ClientError::DownloadHashMismatch`]: do not ack, raise an alarm.
    pub fn unpack_download(&self, file: &DownloadedFile) -> Result<(String, Vec<u8>), ClientError> {
        let unpack_error = |reason: String| ClientError::Unpack {
            province: self.account.province.clone(),
            file_name: file.file_name.clone(),
            reason,
        };
        if file.hash_algorithm != HASH_MD5 {
            return Err(unpack_error(format!(
                "hashAlgorithm {} is not supported",
                file.hash_algorithm
            )));
        }
        if file.compression_format != 0 {
            return Err(unpack_error(format!(
                "compressionFormat {} is not supported",
                file.compression_format
            )));
        }
        let key = match file.encrypt_algorithm {
            0 => None,
            1 => Some(self.account.aes.as_ref().ok_or_else(|| {
                unpack_error(
                    "encrypted (encryptAlgorithm 1) but the account has no AES key".to_owned(),
                )
            })?),
            other => {
                return Err(unpack_error(format!(
                    "encryptAlgorithm {other} is not supported"
                )));
            }
        };
        package::unpack(
            &file.beian_info,
            &file.beian_info_hash,
            key,
            MAX_UNPACKED_BYTES,
        )
        .map_err(|e| match e {
            PackageError::HashMismatch { expected, actual } => ClientError::DownloadHashMismatch {
                province: self.account.province.clone(),
                file_name: file.file_name.clone(),
                expected,
                actual,
            },
            other => unpack_error(other.to_string()),
        })
    }

    /// `isp_downloadack` for a file applied and committed, retried while transient.
    pub async fn download_ack(&self, file_name: &str) -> Result<(), ClientError> {
        let request = Request::DownloadAck {
            hash_algorithm: HASH_MD5,
            file_name,
        };
        self.call_retrying(&request, |doc| {
            self.expect_code_0(Operation::DownloadAck, doc)
        })
        .await
        .map(|_| ())
    }

    /// `isp_querybeianstatus` (section 6): 0 domain, 1 licence, 2 resident ID, …
    pub async fn query_beian_status(
        &self,
        condition_type: i64,
        condition: &str,
    ) -> Result<Vec<StatusInfo>, ClientError> {
        let request = Request::QueryBeianStatus {
            hash_algorithm: HASH_MD5,
            query_condition_type: condition_type,
            query_condition: condition,
        };
        self.call_retrying(&request, |doc| {
            self.expect_code_0(Operation::QueryBeianStatus, doc)
                .map(|doc| doc.status_infos)
        })
        .await
    }

    // -- answers -----------------------------------------------------------------------------

    fn previous_of(&self, doc: ReturnDoc) -> Result<PreviousUpload, ClientError> {
        let doc = self.expect_code_0(Operation::QueryPreviousUpload, doc)?;
        let info = doc.file_info.unwrap_or_default();
        Ok(PreviousUpload {
            data_sequence: info.data_sequence.unwrap_or(0),
            file_name: info.file_name,
        })
    }

    fn download_of(&self, doc: ReturnDoc) -> Result<DownloadOutcome, ClientError> {
        let code = doc.msg_code;
        if !(0..=3).contains(&code) {
            return Err(self.refusal(Operation::Download, doc));
        }
        let info = doc.file_info.unwrap_or_default();
        if code == 2 || (code == 1 && info.beian_info.is_none()) {
            return Ok(DownloadOutcome::Nothing);
        }
        let missing = |field| ClientError::Wire {
            operation: Operation::Download,
            province: self.account.province.clone(),
            source: WireError::MissingField {
                msg_code: code,
                field,
            },
        };
        Ok(DownloadOutcome::File(DownloadedFile {
            more: code == 3,
            file_name: info.file_name.ok_or_else(|| missing("return_FileName"))?,
            encrypt_algorithm: info.encrypt_algorithm.unwrap_or(0),
            hash_algorithm: info.hash_algorithm.unwrap_or(HASH_MD5),
            compression_format: info.compression_format.unwrap_or(0),
            beian_info: info.beian_info.ok_or_else(|| missing("beianInfo"))?,
            beian_info_hash: info
                .beian_info_hash
                .ok_or_else(|| missing("beianInfoHash"))?,
        }))
    }

    fn expect_code_0(&self, op: Operation, doc: ReturnDoc) -> Result<ReturnDoc, ClientError> {
        if doc.msg_code == 0 {
            Ok(doc)
        } else {
            Err(self.refusal(op, doc))
        }
    }

    fn refusal(&self, operation: Operation, doc: ReturnDoc) -> ClientError {
        ClientError::Fault {
            operation,
            province: self.account.province.clone(),
            code: doc.msg_code,
            class: FaultClass::of_msg_code(doc.msg_code, &doc.data_sequences),
            msg: doc.msg,
        }
    }

    fn exhausted(
        &self,
        operation: Operation,
        schedule: &Schedule,
        last: ClientError,
    ) -> ClientError {
        ClientError::RetriesExhausted {
            operation,
            province: self.account.province.clone(),
            attempts: schedule.attempts(),
            elapsed: schedule.elapsed(),
            last: Box::new(last),
        }
    }

    // -- calls -------------------------------------------------------------------------------

    /// One call, retried with backoff while its failure (transport, or `accept`'s verdict on the
    /// answer) is transient. Only for calls that are safe to repeat (not uploads).
    async fn call_retrying<T>(
        &self,
        request: &Request<'_>,
        accept: impl Fn(ReturnDoc) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut schedule = self.config.retry_policy().start();
        loop {
            let cause = match self.call_once(request).await.and_then(&accept) {
                Ok(value) => return Ok(value),
                Err(e) if e.class() == FaultClass::Transient => e,
                Err(e) => return Err(e),
            };
            if !schedule.wait().await {
                return Err(self.exhausted(request.operation(), &schedule, cause));
            }
        }
    }

    /// One signed request and its answer, parsed: the only place a request goes out. It waits
    /// for the bureau's limiter and holds its permit until the answer is read.
    async fn call_once(&self, request: &Request<'_>) -> Result<ReturnDoc, ClientError> {
        let _permit = self.limiter.acquire().await;
        let op = request.operation();
        let rand_val = package::rand_val();
        let pwd_hash =
            package::pwd_hash(self.account.password.expose(), &rand_val).map_err(|_| {
                ClientError::Config {
                    province: self.account.province.clone(),
                    reason: "the password has a character GBK cannot represent".to_owned(),
                }
            })?;
        let auth = Auth {
            isp_id: self.account.isp_id,
            user_name: &self.account.user_name,
            rand_val: &rand_val,
            pwd_hash: &pwd_hash,
        };
        let envelope = wire::request_envelope(&self.account.soap_namespace, &auth, request);
        let started = Instant::now();
        let result = self.exchange(op, envelope).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let province = self.account.province.as_str();
        match &result {
            Ok(doc) => debug!(
                operation = op.name(),
                province,
                msg_code = doc.msg_code,
                latency_ms,
                "bureau answered"
            ),
            Err(error) => debug!(
                operation = op.name(),
                province,
                latency_ms,
                %error,
                "bureau call failed"
            ),
        }
        result
    }

    async fn exchange(&self, op: Operation, envelope: String) -> Result<ReturnDoc, ClientError> {
        let response = self
            .http
            .post(self.endpoint(op))
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", "\"\"")
            .body(envelope)
            .send()
            .await
            .map_err(|e| self.transport(op, &e))?;
        let status = response.status();
        let gbk_declared = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(names_gbk);
        let body = self.read_capped(op, response).await;
        let wire_error = |source| ClientError::Wire {
            operation: op,
            province: self.account.province.clone(),
            source,
        };
        if status != reqwest::StatusCode::OK {
            // SOAP 1.1 sends a Fault with status 500: report the fault when there is one.
            if let Ok(bytes) = &body
                && let Ok(text) = decode_body(bytes, gbk_declared)
                && let Err(fault @ WireError::Fault { .. }) = wire::parse_response(op, &text)
            {
                return Err(wire_error(fault));
            }
            return Err(ClientError::HttpStatus {
                operation: op,
                province: self.account.province.clone(),
                status: status.as_u16(),
            });
        }
        let text = decode_body(&body?, gbk_declared).map_err(wire_error)?;
        wire::parse_response(op, &text).map_err(wire_error)
    }

    /// The answer body, refused as soon as it is known to exceed `max_answer_bytes`.
    async fn read_capped(
        &self,
        op: Operation,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, ClientError> {
        let limit = self.config.max_answer_bytes;
        let too_large = || ClientError::TooLarge {
            operation: op,
            province: self.account.province.clone(),
            limit,
        };
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(op, &e))? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport(&self, operation: Operation, error: &reqwest::Error) -> ClientError {
        let timed_out = error.is_timeout();
        let detail = if timed_out {
            format!(
                "no answer within {:?} ({})",
                self.config.request_timeout,
                error_chain(error)
            )
        } else {
            error_chain(error)
        };
        ClientError::Transport {
            operation,
            province: self.account.province.clone(),
            detail,
            timed_out,
        }
    }
}

/// An error and its sources, `: `-separated (reqwest's own message alone says little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn names_gbk(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["gbk", "gb2312", "gb18030"]
        .iter()
        .any(|n| lower.contains(n))
}

/// Envelopes are UTF-8 (section 1); a bureau that says GBK (header or XML declaration) is read
/// as GBK. Public for the fuzz target `tests/fuzz/fuzz_targets/answer.rs`: an answer's bytes
/// reach [`wire::parse_response`] only through here.
pub fn decode_body(bytes: &[u8], gbk_declared: bool) -> Result<String, WireError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_owned()),
        Err(_) => {
            let head = &bytes[..bytes.len().min(100)];
            if gbk_declared || names_gbk(&String::from_utf8_lossy(head)) {
                package::decode_gbk(bytes).map_err(|_| WireError::NotXml {
                    what: "answer",
                    reason: "declared GBK but is not valid GBK".to_owned(),
                })
            } else {
                Err(WireError::NotXml {
                    what: "answer",
                    reason: "not valid UTF-8".to_owned(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_section_8() {
        for c in [15, 20, 901, 902] {
            assert_eq!(FaultClass::of_msg_code(c, &[]), FaultClass::Transient);
        }
        for c in [4, 5, 12, 13, 16, 19, 22] {
            assert_eq!(FaultClass::of_msg_code(c, &[]), FaultClass::Configuration);
        }
        for c in [6, 7, 8] {
            assert_eq!(FaultClass::of_msg_code(c, &[]), FaultClass::Rebuild);
        }
        assert_eq!(
            FaultClass::of_msg_code(14, &[501, 502]),
            FaultClass::Gap(vec![501, 502])
        );
        assert_eq!(FaultClass::of_msg_code(17, &[]), FaultClass::Split);
        assert_eq!(FaultClass::of_msg_code(18, &[]), FaultClass::Split);
        assert_eq!(FaultClass::of_msg_code(999, &[]), FaultClass::AtOrBelowLast);
        assert_eq!(FaultClass::of_msg_code(21, &[]), FaultClass::Other);
    }

    #[test]
    fn secrets_do_not_print_and_config_parses() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        let c: ClientConfig = serde_json::from_str(
            r#"{"request_timeout":"500ms","retry_initial":2,"retry_max_elapsed":"5m","max_answer_bytes":10}"#,
        )
        .unwrap();
        assert_eq!(c.request_timeout, Duration::from_millis(500));
        assert_eq!(c.retry_initial, Duration::from_secs(2));
        assert_eq!(c.retry_max_elapsed, Duration::from_secs(300));
        assert_eq!(c.max_answer_bytes, 10);
        assert_eq!(
            c.retry_max_interval,
            ClientConfig::default().retry_max_interval
        );
    }

    #[test]
    fn plain_http_only_to_loopback() {
        let account = |url: &str| BureauAccount {
            province: "110000".into(),
            base_url: url.into(),
            isp_id: 1,
            user_name: "u".into(),
            password: Secret::new("p"),
            aes: None,
            soap_namespace: wire::DEFAULT_NAMESPACE.into(),
        };
        let cfg = ClientConfig::default();
        assert!(BureauClient::new(account("http://bureau.example/x"), cfg.clone()).is_err());
        let ok = BureauClient::new(account("http://127.0.0.1:9/{province}/"), cfg.clone()).unwrap();
        assert_eq!(
            ok.endpoint(Operation::Upload),
            "http://127.0.0.1:9/110000/ISPWebService/upDownLoad"
        );
        assert_eq!(
            ok.endpoint(Operation::QueryBeianStatus),
            "http://127.0.0.1:9/110000/BeianStatusWebService/queryBeianStatus"
        );
        assert!(BureauClient::new(account("https://gw.example/110000"), cfg).is_ok());
    }
}
