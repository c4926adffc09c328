//! The sandbox bureau (bureau-protocol.md section 10): the SERVER side of the MIIT enterprise
//! interface V3.0 for any province, for trials, the README demo and end-to-end tests. It serves
//! `{province}/ISPWebService/upDownLoad` and `{province}/BeianStatusWebService/queryBeianStatus`,
//! decides deterministically, and misbehaves on demand (`faults`), plus `/_sandbox/faults` and
//! `/_sandbox/stats` for other processes.
//!
//! Owns: configuration, the HTTP layer (routes, fault injection, connection resets) and the
//! handle. Must not touch the gateway's client code (the two meet only at the protocol), the
//! store, or any real bureau. Logs carry ids, provinces, sequences and codes — never names,
//! phones or ID numbers.
//!
//! Files: `xml` (element tree), `schema` (upload outlines), `upload` (data files → units),
//! `decide` (rules, registry updates), `registry` (seed + approved records), `files` (download
//! documents), `soap` (envelopes), `state` (accounts), `faults` (fault switch).

mod decide;
mod faults;
mod files;
mod registry;
mod schema;
mod soap;
mod state;
mod upload;
mod xml;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::{IncomingStream, Listener};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

pub use faults::{Fault, FaultRule, FaultSwitch};
pub use state::SandboxStats;

use crate::codes::CodeTables;
use crate::package::AesKey;

/// Which V3.0 extensions (section 9) the sandbox bureau has switched on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Extensions {
    pub app: bool,
    pub sms: bool,
}

/// The sandbox's configuration. Durations in config files are milliseconds or strings such
/// as `"1s"`, `"250ms"`, `"2m"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SandboxConfig {
    pub isp_id: i64,
    pub user_name: String,
    pub password: String,
    /// 16 characters each; the same account for every province.
    pub aes_key: String,
    pub aes_iv: String,
    pub soap_namespace: String,
    pub extensions: Extensions,
    /// Between an accepted upload and its BAJG being downloadable.
    #[serde(deserialize_with = "duration::deserialize")]
    pub decision_delay: Duration,
    /// Scales the 24 h SMS window (1/8640 → 10 s).
    pub sms_time_factor: f64,
    /// When a principal's SMS check succeeds after 1901.
    #[serde(deserialize_with = "duration::deserialize")]
    pub sms_confirm_delay: Duration,
    /// The records "filed before" (fixtures/bureau/sandbox-seed.json); none → empty registry.
    pub seed_path: Option<PathBuf>,
    /// An upload is refused with 15 while this many files wait to be downloaded (0: no limit).
    pub max_files_per_download_queue: usize,
    pub encrypt_downloads: bool,
    /// Domain suffixes the bureau accepts (else 1004).
    pub allowed_suffixes: Vec<String>,
    /// Every answer takes at least this long (a real bureau is not instant; tests that count
    /// requests in flight need them to last).
    #[serde(deserialize_with = "duration::deserialize")]
    pub answer_delay: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            isp_id: 1_100_001_234,
            user_name: "isp1234".into(),
            password: "sandbox-password".into(),
            aes_key: "0123456789abcdef".into(),
            aes_iv: "fedcba9876543210".into(),
            soap_namespace: "http://webservice.isp.beian.miit.gov.cn/".into(),
            extensions: Extensions::default(),
            decision_delay: Duration::from_secs(1),
            sms_time_factor: 1.0 / 8640.0,
            sms_confirm_delay: Duration::from_secs(1),
            seed_path: None,
            max_files_per_download_queue: 1000,
            encrypt_downloads: true,
            allowed_suffixes: default_suffixes(),
            answer_delay: Duration::ZERO,
        }
    }
}

/// The default allowed suffixes (hk tw asia jp co so biz me are refused by leaving them out).
pub fn default_suffixes() -> Vec<String> {
    [
        "com",
        "cn",
        "net",
        "org",
        "com.cn",
        "net.cn",
        "org.cn",
        "gov.cn",
        "edu.cn",
        "ac.cn",
        "中国",
        "xn--fiqs8s",
        "公司",
        "xn--55qx5d",
        "网络",
        "xn--io0a7i",
        "info",
        "top",
        "xyz",
        "vip",
        "cc",
        "tv",
        "club",
        "shop",
        "site",
        "online",
        "tech",
        "store",
        "ltd",
        "fun",
        "cloud",
        "work",
        "red",
        "link",
        "pro",
        "wang",
        "ink",
        "art",
        "live",
        "kim",
        "group",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }

    pub fn parse(text: &str) -> Option<Duration> {
        let t = text.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().ok()?;
        let secs = match unit.trim() {
            "ms" | "" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return None,
        };
        Duration::try_from_secs_f64(secs).ok()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(t) => {
                parse(&t).ok_or_else(|| D::Error::custom(format!("bad duration {t:?}")))
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Seed(#[from] registry::SeedError),
    #[error("sandbox listener: {0}")]
    Io(#[from] io::Error),
}

struct App {
    core: Mutex<state::Core>,
    faults: FaultSwitch,
    namespace: String,
    answer_delay: Duration,
}

impl App {
    fn core(&self) -> MutexGuard<'_, state::Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running sandbox bureau.
pub struct SandboxHandle {
    addr: SocketAddr,
    app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SandboxHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/{province}`, the client's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/{{province}}", self.addr)
    }

    pub fn faults(&self) -> FaultSwitch {
        self.app.faults.clone()
    }

    pub fn stats(&self) -> SandboxStats {
        self.app.core().stats.clone()
    }

    /// Stops accepting, lets calls in progress finish, and returns when the server is gone.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// What the sandbox reads from an upload, through its own code path (unpack → GBK → its own
/// schema check and parser): each record as `(Czlx, Jlid)`, the pair its result will carry.
/// For contract tests that compare what the gateway expects with what a bureau sees.
pub fn inspect_upload(
    beian_info: &str,
    beian_info_hash: &str,
    key: Option<&AesKey>,
    isp_id: i64,
    app_extension: bool,
) -> Result<Vec<(i64, i64)>, String> {
    let (_, gbk) = crate::package::unpack(beian_info, beian_info_hash, key, 64 * 1024 * 1024)
        .map_err(|e| e.to_string())?;
    let outline = if app_extension {
        schema::UPLOAD_EXT_OUTLINE
    } else {
        schema::UPLOAD_OUTLINE
    };
    let schema = schema::Schema::parse(outline).map_err(|e| e.to_string())?;
    let units = upload::read_upload(&gbk, isp_id, &schema).map_err(|f| format!("{f:?}"))?;
    Ok(units.iter().map(|u| (u.czlx, u.jlid)).collect())
}

/// Starts the sandbox bureau on `listener`.
pub async fn start(
    listener: TcpListener,
    cfg: SandboxConfig,
) -> Result<SandboxHandle, SandboxError> {
    let key = AesKey::new(cfg.aes_key.as_bytes(), cfg.aes_iv.as_bytes())
        .map_err(|e| SandboxError::Config(e.to_string()))?;
    let outline = if cfg.extensions.app {
        schema::UPLOAD_EXT_OUTLINE
    } else {
        schema::UPLOAD_OUTLINE
    };
    let schema = schema::Schema::parse(outline).map_err(|e| SandboxError::Config(e.to_string()))?;
    let tables = CodeTables::bundled().map_err(|e| SandboxError::Config(e.to_string()))?;
    let seed = match &cfg.seed_path {
        Some(p) => registry::load_seed(p)?,
        None => Default::default(),
    };
    let addr = listener.local_addr()?;
    let app = Arc::new(App {
        namespace: cfg.soap_namespace.clone(),
        answer_delay: cfg.answer_delay,
        core: Mutex::new(state::Core::new(cfg, key, schema, tables, seed)),
        faults: FaultSwitch::default(),
    });
    let router = Router::new()
        .route("/{province}/ISPWebService/upDownLoad", post(up_down_load))
        .route(
            "/{province}/BeianStatusWebService/queryBeianStatus",
            post(query_beian_status),
        )
        .route(
            "/_sandbox/faults",
            post(add_faults).delete(clear_faults).get(list_faults),
        )
        .route("/_sandbox/stats", axum::routing::get(get_stats))
        .layer(DefaultBodyLimit::max(100 * 1024 * 1024))
        .with_state(app.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        KillableListener(listener),
        router.into_make_service_with_connect_info::<ConnKill>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stopped.await;
    });
    let task = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "sandbox bureau stopped");
        }
    });
    tracing::info!(%addr, "sandbox bureau listening");
    Ok(SandboxHandle {
        addr,
        app,
        stop: Some(stop),
        task: Some(task),
    })
}

// ---- connections that can be reset on demand ----

/// A TCP stream whose connection a handler can kill (the next read or write fails, the socket
/// closes with an RST).
struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

impl KillableStream {
    fn check(&self) -> io::Result<()> {
        if self.killed.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "sandbox reset",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct KillableListener(TcpListener);

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((inner, addr)) => {
                    let _ = inner.set_nodelay(true);
                    let stream = KillableStream {
                        inner,
                        killed: Arc::new(AtomicBool::new(false)),
                    };
                    return (stream, addr);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sandbox accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// The handler's grip on its connection.
#[derive(Clone)]
struct ConnKill(Arc<AtomicBool>);

impl Connected<IncomingStream<'_, KillableListener>> for ConnKill {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        ConnKill(stream.io().killed.clone())
    }
}

impl ConnKill {
    fn kill(&self) -> Response {
        self.0.store(true, Ordering::SeqCst);
        // Never delivered: writing it fails and the connection is dropped.
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }
}

// ---- handlers ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Service {
    UpDownLoad,
    Status,
}

async fn up_down_load(
    State(app): State<Arc<App>>,
    Path(province): Path<String>,
    ConnectInfo(conn): ConnectInfo<ConnKill>,
    body: Bytes,
) -> Response {
    handle(app, province, conn, body, Service::UpDownLoad).await
}

async fn query_beian_status(
    State(app): State<Arc<App>>,
    Path(province): Path<String>,
    ConnectInfo(conn): ConnectInfo<ConnKill>,
    body: Bytes,
) -> Response {
    handle(app, province, conn, body, Service::Status).await
}

fn xml_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn soap_fault(code: &str, msg: &str) -> Response {
    xml_response(StatusCode::INTERNAL_SERVER_ERROR, soap::fault(code, msg))
}

/// A request to a bureau in progress: counted in flight, and its span recorded when it ends
/// (also when the client goes away and the handler is dropped).
struct InFlight {
    app: Arc<App>,
    province: String,
    started_ms: f64,
}

impl InFlight {
    fn enter(app: &Arc<App>, province: &str) -> Self {
        let started_ms = app.core().request_started(province);
        Self {
            app: app.clone(),
            province: province.to_owned(),
            started_ms,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.app
            .core()
            .request_ended(&self.province, self.started_ms);
    }
}

async fn handle(
    app: Arc<App>,
    province: String,
    conn: ConnKill,
    body: Bytes,
    service: Service,
) -> Response {
    let province_ok = province.len() == 6
        && province.bytes().all(|b| b.is_ascii_digit())
        && app.core().knows_province(&province);
    if !province_ok {
        return (StatusCode::NOT_FOUND, "no bureau for this province").into_response();
    }
    let _in_flight = InFlight::enter(&app, &province);
    let response = answer(&app, &province, &conn, &body, service).await;
    if !app.answer_delay.is_zero() {
        tokio::time::sleep(app.answer_delay).await;
    }
    response
}

/// The answer to one request of a known province.
async fn answer(
    app: &App,
    province: &str,
    conn: &ConnKill,
    body: &Bytes,
    service: Service,
) -> Response {
    let Ok(text) = std::str::from_utf8(body) else {
        return soap_fault("Client", "the envelope is not UTF-8");
    };
    let req = match soap::parse_request(text) {
        Ok(r) => r,
        Err(e) => return soap_fault("Client", &e),
    };
    let op = req.operation.clone();
    let allowed = match service {
        Service::UpDownLoad => matches!(
            op.as_str(),
            "isp_upload" | "isp_download" | "isp_downloadack" | "isp_querypreviousupload"
        ),
        Service::Status => op == "isp_querybeianstatus",
    };
    if !allowed {
        return soap_fault("Client", &format!("unknown operation {op}"));
    }
    let rule = app.faults.take(province, &op);
    if let Some(r) = &rule {
        app.core().stats.faults_applied += 1;
        tracing::info!(province = %province, op = %op, fault = ?r.fault, "sandbox: fault applied");
    }
    let after = rule
        .as_ref()
        .is_some_and(|r| r.after_processing || r.fault == Fault::LoseAnswer);
    if let (Some(r), false) = (&rule, after) {
        match &r.fault {
            Fault::Slow { millis } => tokio::time::sleep(Duration::from_millis(*millis)).await,
            Fault::WrongHash => {}
            other => {
                let doc = fault_doc(app, province, other);
                return misbehave(app, conn, &op, other, doc);
            }
        }
    }
    let wrong_hash = rule.as_ref().is_some_and(|r| r.fault == Fault::WrongHash);
    let doc = app.core().call(
        province,
        &req,
        Instant::now(),
        chrono::Utc::now(),
        wrong_hash,
    );
    match (&rule, after) {
        (Some(r), true) => {
            if let Fault::Slow { millis } = r.fault {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                return xml_response(StatusCode::OK, soap::envelope(&op, &app.namespace, &doc));
            }
            // A msg_code or gap claim after processing replaces the real answer.
            let doc = match &r.fault {
                Fault::MsgCode { .. } | Fault::GapClaim { .. } => {
                    fault_doc(app, province, &r.fault)
                }
                _ => doc,
            };
            misbehave(app, conn, &op, &r.fault, doc)
        }
        _ => xml_response(StatusCode::OK, soap::envelope(&op, &app.namespace, &doc)),
    }
}

/// The return document a msg_code or gap fault answers (others answer a plain success).
fn fault_doc(app: &App, province: &str, fault: &Fault) -> String {
    match fault {
        Fault::MsgCode { code } => soap::ret(*code, soap::msg_for(*code), ""),
        Fault::GapClaim { missing } => {
            let n = missing.unwrap_or_else(|| app.core().last_seq(province) + 1);
            soap::ret(
                14,
                soap::msg_for(14),
                &format!("<dataSequences><dataSequence>{n}</dataSequence></dataSequences>"),
            )
        }
        _ => soap::ret(0, soap::msg_for(0), ""),
    }
}

/// Sends `doc` the way `fault` says.
fn misbehave(app: &App, conn: &ConnKill, op: &str, fault: &Fault, doc: String) -> Response {
    let envelope = soap::envelope(op, &app.namespace, &doc);
    match fault {
        Fault::Http { status } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, "sandbox fault").into_response()
        }
        Fault::Reset | Fault::LoseAnswer => conn.kill(),
        Fault::SoapFault => soap_fault("Server", "sandbox fault: the service is unavailable"),
        Fault::Malformed => {
            let mut cut = envelope.len() / 2;
            while !envelope.is_char_boundary(cut) {
                cut -= 1;
            }
            xml_response(StatusCode::OK, envelope[..cut].to_owned())
        }
        Fault::Oversized { bytes } => {
            let pad = "x".repeat(bytes.saturating_sub(envelope.len()));
            let body = envelope.replacen("<soap:Body>", &format!("<!--{pad}--><soap:Body>"), 1);
            xml_response(StatusCode::OK, body)
        }
        _ => xml_response(StatusCode::OK, envelope),
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FaultRequest {
    One(FaultRule),
    Many(Vec<FaultRule>),
}

async fn add_faults(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultRequest>(&body) {
        Ok(FaultRequest::One(r)) => app.faults.add(r),
        Ok(FaultRequest::Many(rs)) => rs.into_iter().for_each(|r| app.faults.add(r)),
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
    axum::Json(app.faults.pending()).into_response()
}

async fn clear_faults(State(app): State<Arc<App>>) -> Response {
    app.faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn list_faults(State(app): State<Arc<App>>) -> Response {
    axum::Json(app.faults.pending()).into_response()
}

async fn get_stats(State(app): State<Arc<App>>) -> Response {
    let stats = app.core().stats.clone();
    axum::Json(stats).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_durations() {
        let c: SandboxConfig =
            serde_json::from_str(r#"{"decision_delay": 5, "sms_confirm_delay": "2s"}"#).unwrap();
        assert_eq!(c.decision_delay, Duration::from_millis(5));
        assert_eq!(c.sms_confirm_delay, Duration::from_secs(2));
        assert_eq!(c.isp_id, 1_100_001_234);
        assert_eq!(duration::parse("1.5m"), Some(Duration::from_secs(90)));
    }
}
