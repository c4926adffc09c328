//! The sandbox bureau's accounts, one per province: `dataSequence` stream, accepted files,
//! pending decisions (due after `decision_delay`, processed lazily when the account is next
//! touched), the download queue and the registry — and the operations of sections 3–6 on them.
//!
//! Owns: everything behind the one state mutex; every function here is synchronous (the HTTP
//! layer never holds the lock across an await). Must not touch HTTP, faults or SOAP framing.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Asia::Shanghai;
use serde::Serialize;

use super::SandboxConfig;
use super::decide::{self, Ctx, Finding, Published};
use super::files::{self, ResultPair};
use super::registry::Registry;
use super::schema::Schema;
use super::soap::{Request, msg_for, ret};
use super::upload::{self, Unit, WholeFault};
use super::xml::{Node, push_leaf};
use crate::codes::CodeTables;
use crate::package::{self, AesKey, PackageError, Packed};

/// Data files are at most 50 MB (section 3).
pub const MAX_DATA_FILE: usize = 50 * 1024 * 1024;

#[derive(Debug, Clone)]
struct AcceptedFile {
    seq: i64,
    name: String,
    beian_info: String,
    beian_info_hash: String,
    encrypt_algorithm: i64,
}

#[derive(Debug, Clone)]
struct QueuedFile {
    name: String,
    packed: Packed,
    encrypted: bool,
}

#[derive(Debug)]
enum JobKind {
    Decide {
        file_name: String,
        parsed: Result<Vec<Unit>, WholeFault>,
    },
    SmsFinal {
        file_name: String,
        units: Vec<Unit>,
        expire: bool,
    },
}

#[derive(Debug)]
struct Job {
    due: Instant,
    kind: JobKind,
}

#[derive(Debug)]
struct Account {
    last_seq: i64,
    accepted: Vec<AcceptedFile>,
    queue: VecDeque<QueuedFile>,
    jobs: Vec<Job>,
    registry: Registry,
    files_made: u64,
}

/// Counters for tests and crash drills (`GET /_sandbox/stats`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SandboxStats {
    /// `{province}/{operation}:{id}` → how many accepted records carried it. More than 1
    /// means one filing became two bureau cases.
    pub cases_by_identity: HashMap<String, usize>,
    /// Accepted dataSequences per province, in order.
    pub accepted_by_province: HashMap<String, Vec<i64>>,
    pub calls: HashMap<String, usize>,
    pub files_served: usize,
    pub files_acked: usize,
    pub faults_applied: usize,
    /// Every request per province as `[start, end]`, milliseconds since the sandbox started
    /// (from the request read to the answer made): what the bureau saw of everyone's rate.
    pub requests_by_province: HashMap<String, Vec<[f64; 2]>>,
    /// The most requests one province had in progress at once.
    pub max_in_flight: HashMap<String, usize>,
}

impl SandboxStats {
    pub fn accepted_sequences(&self, province: &str) -> Vec<i64> {
        self.accepted_by_province
            .get(province)
            .cloned()
            .unwrap_or_default()
    }
}

/// All accounts and what they share.
pub struct Core {
    cfg: SandboxConfig,
    key: AesKey,
    schema: Schema,
    tables: CodeTables,
    seed: HashMap<String, Registry>,
    accounts: HashMap<String, Account>,
    pub stats: SandboxStats,
    started: Instant,
    in_flight: HashMap<String, usize>,
}

fn doc(code: i64) -> String {
    ret(code, msg_for(code), "")
}

impl Core {
    pub fn new(
        cfg: SandboxConfig,
        key: AesKey,
        schema: Schema,
        tables: CodeTables,
        seed: HashMap<String, Registry>,
    ) -> Self {
        Self {
            cfg,
            key,
            schema,
            tables,
            seed,
            accounts: HashMap::new(),
            stats: SandboxStats::default(),
            started: Instant::now(),
            in_flight: HashMap::new(),
        }
    }

    /// A request to `province` begins; returns its start for [`Core::request_ended`].
    pub fn request_started(&mut self, province: &str) -> f64 {
        let now = self.started.elapsed().as_secs_f64() * 1000.0;
        let n = self.in_flight.entry(province.to_owned()).or_default();
        *n += 1;
        let most = self
            .stats
            .max_in_flight
            .entry(province.to_owned())
            .or_default();
        *most = (*most).max(*n);
        now
    }

    /// The request that began at `started_ms` has its answer.
    pub fn request_ended(&mut self, province: &str, started_ms: f64) {
        let now = self.started.elapsed().as_secs_f64() * 1000.0;
        if let Some(n) = self.in_flight.get_mut(province) {
            *n = n.saturating_sub(1);
        }
        self.stats
            .requests_by_province
            .entry(province.to_owned())
            .or_default()
            .push([started_ms, now]);
    }

    /// Whether a province has a bureau (a `Gj_dm_xx` entry).
    pub fn knows_province(&self, province: &str) -> bool {
        self.tables.province_abbrev(province).is_some()
    }

    pub fn last_seq(&self, province: &str) -> i64 {
        self.accounts.get(province).map(|a| a.last_seq).unwrap_or(0)
    }

    fn account(&mut self, province: &str) -> &mut Account {
        let (cfg, key, seed) = (&self.cfg, &self.key, &self.seed);
        self.accounts.entry(province.to_owned()).or_insert_with(|| {
            let mut account = Account {
                last_seq: 0,
                accepted: Vec::new(),
                queue: VecDeque::new(),
                jobs: Vec::new(),
                registry: seed.get(province).cloned().unwrap_or_else(Registry::new),
                files_made: 0,
            };
            // The first download of every account is the code tables.
            queue_file(&mut account, cfg, key, "JCDM", &files::jcdm());
            account
        })
    }

    /// Authentication (section 2): 4 user / account id, 16 short randVal, 5 password,
    /// 10 hash algorithm. None when it passes.
    fn authenticate(&self, req: &Request) -> Option<i64> {
        let isp_ok =
            req.param("ispId").and_then(|v| v.parse::<i64>().ok()) == Some(self.cfg.isp_id);
        if !isp_ok || req.param("userName") != Some(self.cfg.user_name.as_str()) {
            return Some(4);
        }
        let rand_val = req.param("randVal").unwrap_or_default();
        if rand_val.chars().count() < 20 {
            return Some(16);
        }
        match package::pwd_hash(&self.cfg.password, rand_val) {
            Ok(h) if Some(h.as_str()) == req.param("pwdHash") => {}
            _ => return Some(5),
        }
        if req.param("hashAlgorithm").is_some_and(|h| h != "0") {
            return Some(10);
        }
        None
    }

    /// One call; returns the return document. `wrong_hash` corrupts a served file's hash.
    pub fn call(
        &mut self,
        province: &str,
        req: &Request,
        now: Instant,
        wall: DateTime<Utc>,
        wrong_hash: bool,
    ) -> String {
        *self.stats.calls.entry(req.operation.clone()).or_default() += 1;
        if let Some(code) = self.authenticate(req) {
            tracing::info!(province, op = %req.operation, code, "sandbox: authentication refused");
            return doc(code);
        }
        self.advance(province, now, wall);
        match req.operation.as_str() {
            "isp_upload" => self.upload(province, req, now),
            "isp_download" => self.download(province, wrong_hash),
            "isp_downloadack" => self.ack(province, req),
            "isp_querypreviousupload" => self.previous(province),
            "isp_querybeianstatus" => self.status(province, req),
            _ => doc(999),
        }
    }

    fn upload(&mut self, province: &str, req: &Request, now: Instant) -> String {
        if req.param("compressionFormat").unwrap_or("0") != "0" {
            return doc(11);
        }
        let encrypt = match req.param("encryptAlgorithm").unwrap_or("1") {
            "0" => 0,
            "1" => 1,
            _ => return doc(9),
        };
        let Some(seq) = req
            .param("dataSequence")
            .and_then(|s| s.parse::<i64>().ok())
        else {
            return ret(999, "缺少或无效的dataSequence", "");
        };
        let max_queue = self.cfg.max_files_per_download_queue;
        let delay = self.cfg.decision_delay;
        let isp_id = self.cfg.isp_id;
        let key = self.key.clone();
        let account = self.account(province);
        if seq <= account.last_seq {
            tracing::info!(
                province,
                seq,
                last = account.last_seq,
                "sandbox: sequence repeated"
            );
            return ret(999, "该dataSequence已接收，不再处理", "");
        }
        if seq > account.last_seq + 1 {
            let mut list = String::from("<dataSequences>");
            for n in (account.last_seq + 1..seq).take(1000) {
                push_leaf(&mut list, "dataSequence", &n.to_string());
            }
            list.push_str("</dataSequences>");
            tracing::info!(
                province,
                seq,
                last = account.last_seq,
                "sandbox: sequence gap"
            );
            return ret(14, msg_for(14), &list);
        }
        if max_queue > 0 && account.queue.len() >= max_queue {
            return doc(15);
        }
        let beian_info = req.param("beianInfo").unwrap_or_default();
        let beian_info_hash = req.param("beianInfoHash").unwrap_or_default();
        let key_opt = (encrypt == 1).then_some(&key);
        let (name, gbk) = match package::unpack(beian_info, beian_info_hash, key_opt, MAX_DATA_FILE)
        {
            Ok(v) => v,
            Err(e) => {
                let code = match e {
                    PackageError::Decrypt => 6,
                    PackageError::Base64(_) if encrypt == 1 => 6,
                    PackageError::HashMismatch { .. } => 7,
                    PackageError::TooLarge { .. } => 18,
                    _ => 8,
                };
                tracing::info!(province, seq, code, "sandbox: upload refused");
                return doc(code);
            }
        };
        // Interpretation: an entry name outside letters/digits + .xml is an unzip fault (8).
        if !package::valid_entry_name(&name) {
            return doc(8);
        }
        let parsed = upload::read_upload(&gbk, isp_id, &self.schema);
        let account = self.account(province);
        account.last_seq = seq;
        account.accepted.push(AcceptedFile {
            seq,
            name: name.clone(),
            beian_info: beian_info.to_owned(),
            beian_info_hash: beian_info_hash.to_owned(),
            encrypt_algorithm: encrypt,
        });
        if let Ok(units) = &parsed {
            for u in units {
                *self
                    .stats
                    .cases_by_identity
                    .entry(format!("{province}/{}", u.identity))
                    .or_default() += 1;
            }
        }
        let records = parsed.as_ref().map(Vec::len).unwrap_or(0);
        let fault = parsed.as_ref().err().map(|f| f.code);
        tracing::info!(province, seq, records, ?fault, "sandbox: upload accepted");
        self.stats
            .accepted_by_province
            .entry(province.to_owned())
            .or_default()
            .push(seq);
        let account = self.account(province);
        account.jobs.push(Job {
            due: now + delay,
            kind: JobKind::Decide {
                file_name: name,
                parsed,
            },
        });
        doc(0)
    }

    /// Runs every decision that is due.
    fn advance(&mut self, province: &str, now: Instant, wall: DateTime<Utc>) {
        loop {
            let account = self.account(province);
            let next = account
                .jobs
                .iter()
                .enumerate()
                .filter(|(_, j)| j.due <= now)
                .min_by_key(|(_, j)| j.due)
                .map(|(i, _)| i);
            let Some(i) = next else { break };
            let job = account.jobs.remove(i);
            self.run_job(province, job, wall);
        }
    }

    fn run_job(&mut self, province: &str, job: Job, wall: DateTime<Utc>) {
        let abbrev = self
            .tables
            .province_abbrev(province)
            .unwrap_or("京")
            .to_owned();
        let cfg = self.cfg.clone();
        let key = self.key.clone();
        let year = wall.with_timezone(&Shanghai).year();
        let ctx = Ctx {
            province,
            abbrev: &abbrev,
            isp_id: cfg.isp_id,
            allowed_suffixes: &cfg.allowed_suffixes,
            year,
        };
        let account = self.account(province);
        let mut pairs = Vec::new();
        let mut basj = Vec::new();
        let mut zxsj = Vec::new();
        match job.kind {
            JobKind::Decide {
                file_name,
                parsed: Err(f),
            } => {
                pairs.push(ResultPair {
                    codes: vec![(f.code, file_name.clone())],
                    czlx: f.czlx,
                    bs: Some(file_name),
                    shyj: Some(f.reason),
                    jlid: None,
                    decided_at: wall,
                });
            }
            JobKind::Decide {
                file_name,
                parsed: Ok(units),
            } => {
                let mut confirm = Vec::new();
                let mut expire = Vec::new();
                for unit in units {
                    let findings = decide::precheck(&unit, &account.registry, &ctx);
                    if !findings.is_empty() {
                        pairs.push(pair(&unit, &file_name, findings, None, wall));
                    } else if cfg.extensions.sms {
                        let window =
                            Duration::from_secs_f64(86_400.0 * cfg.sms_time_factor.max(0.0));
                        let deadline = wall
                            + chrono::Duration::from_std(window)
                                .unwrap_or(chrono::Duration::zero());
                        let codes = vec![Finding {
                            code: 1901,
                            dmms: files::shanghai_rfc3339(deadline),
                        }];
                        pairs.push(pair(&unit, &file_name, codes, None, wall));
                        let mobile = decide::sms_mobile(&unit, &account.registry);
                        if mobile.is_some_and(|m| m.trim().ends_with("0000")) {
                            expire.push(unit);
                        } else {
                            confirm.push(unit);
                        }
                    } else {
                        final_result(
                            &unit, &file_name, account, &ctx, wall, &mut pairs, &mut basj,
                            &mut zxsj,
                        );
                    }
                }
                let window = Duration::from_secs_f64(86_400.0 * cfg.sms_time_factor.max(0.0));
                if !confirm.is_empty() {
                    account.jobs.push(Job {
                        due: job.due + cfg.sms_confirm_delay,
                        kind: JobKind::SmsFinal {
                            file_name: file_name.clone(),
                            units: confirm,
                            expire: false,
                        },
                    });
                }
                if !expire.is_empty() {
                    account.jobs.push(Job {
                        due: job.due + window,
                        kind: JobKind::SmsFinal {
                            file_name,
                            units: expire,
                            expire: true,
                        },
                    });
                }
            }
            JobKind::SmsFinal {
                file_name,
                units,
                expire,
            } => {
                for unit in units {
                    if expire {
                        let codes = vec![Finding {
                            code: 1902,
                            dmms: "短信核验超时".into(),
                        }];
                        pairs.push(pair(&unit, &file_name, codes, None, wall));
                    } else {
                        final_result(
                            &unit, &file_name, account, &ctx, wall, &mut pairs, &mut basj,
                            &mut zxsj,
                        );
                    }
                }
            }
        }
        let codes: Vec<i64> = pairs
            .iter()
            .flat_map(|p| p.codes.iter().map(|c| c.0))
            .collect();
        tracing::info!(province, ?codes, "sandbox: results due");
        if !pairs.is_empty() {
            queue_file(account, &cfg, &key, "BAJG", &files::bajg(&pairs));
        }
        if !basj.is_empty() {
            queue_file(account, &cfg, &key, "BASJ", &files::basj(&basj));
        }
        if !zxsj.is_empty() {
            queue_file(account, &cfg, &key, "ZXSJ", &files::zxsj(&zxsj));
        }
    }

    fn download(&mut self, province: &str, wrong_hash: bool) -> String {
        let account = self.account(province);
        let waiting = account.queue.len();
        let Some(head) = account.queue.front() else {
            return doc(2);
        };
        let code = if waiting > 1 { 3 } else { 1 };
        let hash = if wrong_hash {
            package::md5_base64(head.name.as_bytes())
        } else {
            head.packed.beian_info_hash.clone()
        };
        let mut extra = String::from("<fileInfos>");
        push_leaf(&mut extra, "hashAlgorithm", "0");
        push_leaf(&mut extra, "compressionFormat", "0");
        push_leaf(
            &mut extra,
            "encryptAlgorithm",
            if head.encrypted { "1" } else { "0" },
        );
        push_leaf(&mut extra, "return_FileName", &head.name);
        push_leaf(&mut extra, "beianInfo", &head.packed.beian_info);
        push_leaf(&mut extra, "beianInfoHash", &hash);
        extra.push_str("</fileInfos>");
        tracing::info!(province, file = %head.name, code, "sandbox: file served");
        self.stats.files_served += 1;
        ret(code, msg_for(code), &extra)
    }

    fn ack(&mut self, province: &str, req: &Request) -> String {
        let Some(name) = req.param("fileName").filter(|n| !n.is_empty()) else {
            return doc(21);
        };
        let name = name.to_owned();
        let account = self.account(province);
        let Some(i) = account.queue.iter().position(|f| f.name == name) else {
            return ret(999, "没有该文件", "");
        };
        account.queue.remove(i);
        tracing::info!(province, file = %name, "sandbox: file acked");
        self.stats.files_acked += 1;
        doc(0)
    }

    fn previous(&mut self, province: &str) -> String {
        let account = self.account(province);
        let mut extra = String::from("<fileInfos>");
        push_leaf(&mut extra, "hashAlgorithm", "0");
        push_leaf(&mut extra, "compressionFormat", "0");
        match account.accepted.last() {
            Some(f) => {
                push_leaf(
                    &mut extra,
                    "encryptAlgorithm",
                    &f.encrypt_algorithm.to_string(),
                );
                push_leaf(&mut extra, "dataSequence", &f.seq.to_string());
                push_leaf(&mut extra, "return_FileName", &f.name);
                push_leaf(&mut extra, "beianInfo", &f.beian_info);
                push_leaf(&mut extra, "beianInfoHash", &f.beian_info_hash);
            }
            None => {
                push_leaf(&mut extra, "encryptAlgorithm", "0");
                push_leaf(&mut extra, "dataSequence", "0");
                for n in ["return_FileName", "beianInfo", "beianInfoHash"] {
                    push_leaf(&mut extra, n, "");
                }
            }
        }
        extra.push_str("</fileInfos>");
        doc_with(0, &extra)
    }

    fn status(&mut self, province: &str, req: &Request) -> String {
        let kind = req.param("queryConditionType").unwrap_or("0").to_owned();
        let cond = req.param("queryCondition").unwrap_or_default().to_owned();
        let account = self.account(province);
        let reg = &account.registry;
        let mut info = String::from("<StatusInfo>");
        push_leaf(&mut info, "Cxtjlx", &kind);
        push_leaf(&mut info, "Cxtj", &cond);
        let found = if kind == "0" {
            reg.website_by_domain(&cond).map(|(s, w)| {
                push_leaf(&mut info, "Wzmc", &w.name);
                push_leaf(&mut info, "Ztbah", &s.baxh);
                push_leaf(&mut info, "Wzbah", &w.baxh);
            })
        } else {
            reg.subject_by_id_number(&cond)
                .map(|s| push_leaf(&mut info, "Ztbah", &s.baxh))
        };
        push_leaf(&mut info, "Bazt", if found.is_some() { "0" } else { "1" });
        info.push_str("</StatusInfo>");
        doc_with(0, &info)
    }
}

fn doc_with(code: i64, extra: &str) -> String {
    ret(code, msg_for(code), extra)
}

fn pair(
    unit: &Unit,
    file_name: &str,
    findings: Vec<Finding>,
    shyj: Option<String>,
    wall: DateTime<Utc>,
) -> ResultPair {
    ResultPair {
        codes: findings.into_iter().map(|f| (f.code, f.dmms)).collect(),
        czlx: unit.czlx,
        bs: Some(file_name.to_owned()),
        shyj,
        jlid: Some(unit.jlid),
        decided_at: wall,
    }
}

/// The verdict of a unit that passed its checks (and its SMS check): 1002 or 1001 + publish.
#[allow(clippy::too_many_arguments)]
fn final_result(
    unit: &Unit,
    file_name: &str,
    account: &mut Account,
    ctx: &Ctx<'_>,
    wall: DateTime<Utc>,
    pairs: &mut Vec<ResultPair>,
    basj: &mut Vec<Node>,
    zxsj: &mut Vec<(i64, i64)>,
) {
    if let Some(f) = decide::verdict(unit) {
        let codes = vec![Finding {
            code: f.code,
            dmms: "审核不通过".into(),
        }];
        pairs.push(pair(unit, file_name, codes, Some(f.dmms), wall));
        return;
    }
    match decide::approve(unit, &mut account.registry, ctx) {
        Ok(published) => {
            let codes = vec![Finding {
                code: 1001,
                dmms: "审核通过".into(),
            }];
            pairs.push(pair(unit, file_name, codes, None, wall));
            match published {
                Published::Basj(b) => basj.push(b),
                Published::Zxsj(zxlb, jlid) => zxsj.push((zxlb, jlid)),
                Published::Nothing => {}
            }
        }
        Err(f) => pairs.push(pair(unit, file_name, vec![f], None, wall)),
    }
}

/// GBK-encodes, packs and queues a download file named `{ispId}{KIND}{n:010}.xml`.
fn queue_file(account: &mut Account, cfg: &SandboxConfig, key: &AesKey, kind: &str, xml: &str) {
    account.files_made += 1;
    let name = format!("{}{kind}{:010}.xml", cfg.isp_id, account.files_made);
    let gbk = match package::encode_gbk(xml) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(file = %name, error = %e, "sandbox: download file is not GBK");
            return;
        }
    };
    let key_opt = cfg.encrypt_downloads.then_some(key);
    match package::pack(&name, &gbk, key_opt) {
        Ok(packed) => account.queue.push_back(QueuedFile {
            name,
            packed,
            encrypted: cfg.encrypt_downloads,
        }),
        Err(e) => tracing::error!(file = %name, error = %e, "sandbox: packing failed"),
    }
}
