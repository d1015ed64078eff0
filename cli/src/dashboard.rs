//! `mesh dashboard`: where the controller's dashboard is, found as every command finds
//! the controller ([`Api::locate`]): the running demo's URL, or in a cluster the
//! CLI's own port-forward to the controller's pod, which stays open until Ctrl-C. It
//! prints the URL (`http://127.0.0.1:PORT/`), and opens a browser on it only with
//! `--show` (`xdg-open`, or `open` on macOS; if that fails, a note says so and the
//! URL still works).
//!
//! In a cluster the URL is a small relay of the CLI's own in front of the port-forward
//! ([`relay`]): it adds the kubeconfig user's bearer token to the page's API calls, so
//! that the controller reviews the *user's* rights for what needs them (tap, top) as it
//! does for `mesh tap`, and the token never reaches the browser (no token in a URL, in
//! the page or in its storage).
//!
//! The controller answers before the URL is printed (`/api/version`), so a URL that
//! is printed leads somewhere.

use crate::api::{Api, ApiArgs};
use anyhow::Context as _;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{watch, Mutex},
};

/// Flags of `mesh dashboard`.
#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Open the dashboard in the system's browser too.
    #[arg(long)]
    show: bool,

    #[command(flatten)]
    api: ApiArgs,
}

/// Prints the dashboard's URL; through a port-forward, keeps it open until Ctrl-C.
pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let api = Api::locate(&args.api).await?;
    // Reached before it is offered: an error names the port-forward if it failed.
    api.get_json("/api/version", &[]).await?;
    if !api.forwarded() {
        // The demo's (or --api-addr's) controller: the URL works as long as it runs.
        offer(&format!("http://{}/", api.addr), args.show);
        return Ok(());
    }
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .context("cannot listen on a loopback port for the dashboard")?;
    let local = listener.local_addr()?;
    // The token is read before the URL is offered, so the first request carries it.
    let first = api.authorization().await.unwrap_or_else(|why| {
        crate::note(&format!("no token for the dashboard's API calls: {why}"));
        None
    });
    let (token, tokens) = watch::channel(first);
    offer(&format!("http://{local}/"), args.show);
    crate::note(
        "the dashboard is reached through a port-forward to the controller: Ctrl-C stops it",
    );
    tokio::select! {
        r = relay(listener, api.addr, tokens) => r?,
        () = refresh(&api, &token) => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}

/// Prints `url`, and opens it with `--show`.
fn offer(url: &str, show: bool) {
    crate::out(&format!("{url}\n"));
    if show {
        open(url);
    }
}

/// How often the user's token is read again from the kubeconfig: an exec plugin is not
/// run for every request, and a rotated or refreshed token is picked up within this.
const TOKEN_REFRESH: Duration = Duration::from_secs(60);

/// Keeps `token` current: the kubeconfig user's `authorization` value, read again
/// every [`TOKEN_REFRESH`]. Runs on the command's own task (kube's token sources, exec
/// plugins among them, are not all `Send`), never returns.
async fn refresh(api: &Api, token: &watch::Sender<Option<HeaderValue>>) {
    let mut said = false;
    loop {
        tokio::time::sleep(TOKEN_REFRESH).await;
        match api.authorization().await {
            Ok(value) => {
                token.send_replace(value);
                said = false;
            }
            Err(why) if !said => {
                // The controller then refuses what needs a token, and the page says so.
                crate::note(&format!("no token for the dashboard's API calls: {why}"));
                said = true;
            }
            Err(_) => {}
        }
    }
}

/// Serves the dashboard on `listener`: each browser connection gets one connection of
/// its own to the controller through the port-forward, over which its requests pass as
/// they are, `/api/` ones with the user's token added; the answers (Server-Sent Events
/// included) stream back as they come.
async fn relay(
    listener: TcpListener,
    upstream: SocketAddr,
    token: watch::Receiver<Option<HeaderValue>>,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    loop {
        let (browser, _) = listener.accept().await?;
        let token = token.clone();
        tokio::spawn(async move {
            if let Err(e) = relay_conn(browser, local, upstream, token).await {
                // The browser went away, or the forward did: the page says it is
                // disconnected and retries.
                let _ = e;
            }
        });
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

async fn relay_conn(
    browser: TcpStream,
    local: SocketAddr,
    upstream: SocketAddr,
    token: watch::Receiver<Option<HeaderValue>>,
) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(upstream)
        .await
        .context("the port-forward to the controller")?;
    let (send, conn) = hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(tcp))
        .await
        .context("the controller's API")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // One request at a time on a connection (HTTP/1): the lock is never contended.
    let send = Arc::new(Mutex::new(send));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let answer = pass(req, local, send.clone(), token.clone());
        async move { Ok::<_, std::convert::Infallible>(answer.await) }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(browser), service)
        .await
        .context("the browser's connection")
}

/// One request through: refused unless it names this relay as its host (a page of
/// another site that rebinds its name to this address gets nothing, least of all the
/// token), else passed on with the token.
async fn pass(
    mut req: Request<Incoming>,
    local: SocketAddr,
    send: Arc<Mutex<hyper::client::conn::http1::SendRequest<Incoming>>>,
    token: watch::Receiver<Option<HeaderValue>>,
) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let ours = [
        format!("127.0.0.1:{}", local.port()),
        format!("localhost:{}", local.port()),
    ];
    if !host
        .as_deref()
        .is_some_and(|h| ours.iter().any(|o| o.eq_ignore_ascii_case(h)))
    {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "this dashboard answers only http://127.0.0.1:{}/ (Host was {})",
                local.port(),
                host.as_deref().unwrap_or("missing")
            ),
        );
    }
    if req.uri().path().starts_with("/api/") {
        // Whatever the browser sent is replaced: the page never holds a token.
        req.headers_mut().remove(header::AUTHORIZATION);
        let value = token.borrow().clone();
        if let Some(value) = value {
            req.headers_mut().insert(header::AUTHORIZATION, value);
        }
    }
    let sent = async {
        let mut send = send.lock().await;
        send.ready().await.map_err(|e| e.to_string())?;
        send.send_request(req).await.map_err(|e| e.to_string())
    };
    match sent.await {
        Ok(rsp) => rsp.map(|body| body.boxed()),
        Err(e) => refuse(
            StatusCode::BAD_GATEWAY,
            format!(
                "the controller did not answer through the port-forward ({e}); if it \
                 persists, restart mesh dashboard"
            ),
        ),
    }
}

/// An error of the relay's own, as the controller's API words its errors.
fn refuse(status: StatusCode, message: String) -> Response<Body> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut rsp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rsp
}

/// Opens `url` in the system's browser; a failure is a note, not an error.
fn open(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let spawned = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        crate::note(&format!(
            "cannot open a browser ({opener}: {e}); open {url} yourself"
        ));
    }
}
