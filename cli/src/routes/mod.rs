//! `mesh routes TYPE/NAME`: per-route golden metrics of a service's ServiceProfile, as
//! every client proxy sees them, like `linkerd viz routes`.
//!
//! There is no Prometheus in the loop: the command scrapes every proxy's `/metrics` twice,
//! `--window` apart, and computes success rate, request rate and latency percentiles from
//! the differences, with Prometheus's own arithmetic ([`stats`]). The proxies are the ones
//! named with `--metrics`, or else those of the newest running `mesh demo`, which lists
//! them in its state file ([`demo::state`]) while it runs; against the demo the namespace
//! defaults to the demo's, and a service the demo does not have is an error.
//!
//! Rates divide by the time that really passed between a proxy's two scrapes (the arrival
//! of each response), not by the nominal window: a scrape delayed by a busy proxy does not
//! inflate the rate. `-o json` reports that measured time per proxy.

mod stats;

use crate::{demo::state::State, UsageError};
use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use stats::{RouteStats, Selector};
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};
use tokio::{net::TcpStream, time::Instant};

/// How long one scrape (connect, request, whole body) may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest `--window`: the command blocks for it.
const MAX_WINDOW: Duration = Duration::from_secs(600);

/// Flags of `mesh routes`.
#[derive(Debug, clap::Args)]
pub struct RoutesArgs {
    /// What to show routes for: `svc/NAME` (or `service/NAME`): the routes of NAME's
    /// ServiceProfile as seen by every client proxy. `deploy/NAME` (`deployment/NAME`)
    /// means the service of the same name for now.
    #[arg(value_name = "TYPE/NAME")]
    target: String,

    /// The service's namespace [default: the demo's against the demo, else `default`].
    #[arg(short = 'n', long)]
    namespace: Option<String>,

    /// A proxy's metrics URL (`http://HOST:PORT/metrics`); repeat for each proxy.
    /// Without it, the proxies of the newest running `mesh demo`.
    #[arg(long = "metrics", value_name = "URL")]
    metrics: Vec<String>,

    /// Time between the two scrapes the numbers are computed from (a Go duration: 5s,
    /// 500ms).
    #[arg(long, default_value = "5s", value_parser = mesh_api::duration::parse_positive)]
    window: Duration,

    /// Output format: the table, `wide` (success and rate before and after retries) or
    /// `json`.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Table,
    Wide,
    Json,
}

/// A validated `mesh routes`: nothing has been read or connected yet.
#[derive(Debug)]
pub struct Config {
    service: String,
    /// `None`: the demo's namespace, or `default`.
    namespace: Option<String>,
    /// `None`: find a running demo.
    proxies: Option<Vec<Proxy>>,
    window: Duration,
    output: Output,
}

/// A proxy to scrape.
#[derive(Clone, Debug)]
struct Proxy {
    name: String,
    url: Uri,
}

// === impl Config ===

impl TryFrom<RoutesArgs> for Config {
    type Error = UsageError;

    fn try_from(args: RoutesArgs) -> Result<Self, UsageError> {
        let (kind, name) = args.target.split_once('/').ok_or_else(|| {
            UsageError::new(format!(
                "{:?} is not TYPE/NAME, such as svc/web",
                args.target
            ))
        })?;
        match kind {
            "svc" | "service" | "services" | "deploy" | "deployment" | "deployments" => {}
            _ => {
                return Err(UsageError::new(format!(
                    "unknown resource type {kind:?}: use svc (service) or deploy (deployment)"
                )))
            }
        }
        check_label("the name", name)?;
        if let Some(ns) = &args.namespace {
            check_label("--namespace", ns)?;
        }
        if args.window > MAX_WINDOW {
            return Err(UsageError::new(format!(
                "--window {:?} is longer than the maximum, {MAX_WINDOW:?}",
                args.window
            )));
        }
        let proxies = if args.metrics.is_empty() {
            None
        } else {
            let proxies = args
                .metrics
                .iter()
                .map(|url| {
                    parse_url(url).map(|url| Proxy {
                        name: url.to_string(),
                        url,
                    })
                })
                .collect::<Result<_, _>>()?;
            Some(proxies)
        };
        Ok(Self {
            service: name.to_string(),
            namespace: args.namespace,
            proxies,
            window: args.window,
            output: args.output,
        })
    }
}

/// Service and namespace names are DNS-1123 labels.
fn check_label(what: &str, s: &str) -> Result<(), UsageError> {
    if mesh_api::names::is_dns_label(s) {
        Ok(())
    } else {
        Err(UsageError::new(format!(
            "{what} {s:?} is not a DNS label (lowercase letters, digits and '-')"
        )))
    }
}

/// An `http://` URL with a host; a bare `HOST:PORT` means its `/metrics`.
fn parse_url(s: &str) -> Result<Uri, UsageError> {
    let bad = |why: &str| UsageError::new(format!("--metrics {s:?}: {why}"));
    let full = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}/metrics")
    };
    let uri: Uri = full.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// is supported"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(uri)
}

// === run ===

/// Scrapes, waits `--window`, scrapes again, and prints the routes.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (proxies, namespace) = match &config.proxies {
        Some(proxies) => (
            proxies.clone(),
            config.namespace.clone().unwrap_or_else(|| "default".into()),
        ),
        None => {
            let demo = State::require("no --metrics given and ", " or pass --metrics URL")?;
            let namespace = config
                .namespace
                .clone()
                .unwrap_or_else(|| demo.namespace.clone());
            demo.check_service(&config.service, &namespace)?;
            (demo_proxies(&demo)?, namespace)
        }
    };
    let selector = Selector::new(&config.service, &namespace);
    let start = Instant::now();
    let first = scrape_all(&proxies, &selector).await?;
    tokio::time::sleep_until(start + config.window).await;
    let second = scrape_all(&proxies, &selector).await?;
    let per_proxy: Vec<_> = first
        .into_iter()
        .zip(second)
        .map(|((before, t0), (after, t1))| (stats::deltas(&before, &after), t1 - t0))
        .collect();
    let rows = stats::aggregate(&per_proxy);
    let out = match config.output {
        Output::Table => render_table(&rows, &config.service, false),
        Output::Wide => render_table(&rows, &config.service, true),
        Output::Json => render_json(&rows, &config, &namespace, &proxies, &per_proxy),
    };
    if rows.is_empty() && config.output != Output::Json {
        crate::note(&format!(
            "no route metrics for service {}.{namespace} on {} prox{}: does it have a \
             ServiceProfile, and do meshed clients call it?",
            config.service,
            proxies.len(),
            if proxies.len() == 1 { "y" } else { "ies" }
        ));
    }
    crate::out(&out);
    Ok(())
}

type Scrape = (BTreeMap<(String, Vec<(String, String)>), f64>, Instant);

/// Scrapes every proxy at once; the first failure fails all, naming its URL.
async fn scrape_all(proxies: &[Proxy], selector: &Selector) -> anyhow::Result<Vec<Scrape>> {
    let scrapes = proxies.iter().map(|p| async move {
        let (text, at) = tokio::time::timeout(SCRAPE_TIMEOUT, fetch(&p.url))
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {SCRAPE_TIMEOUT:?}"))
            .and_then(|r| r)
            .with_context(|| format!("scrape {}", p.url))?;
        let samples = mesh_api::prom::parse(&text)
            .with_context(|| format!("{} is not Prometheus metrics", p.url))?;
        anyhow::Ok((stats::select(&samples, selector), at))
    });
    futures_util::future::try_join_all(scrapes).await
}

/// GETs `url` over a fresh HTTP/1 connection; the body and when its head arrived.
async fn fetch(url: &Uri) -> anyhow::Result<(String, Instant)> {
    let host = url.host().context("no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host, port)).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    // The connection task ends with the response; its error is the request's error.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let authority = url.authority().map_or(host, |a| a.as_str());
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .body(Empty::<Bytes>::new())?;
    let res = send.send_request(req).await?;
    let at = Instant::now();
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        anyhow::bail!("HTTP {status}");
    }
    let text = String::from_utf8(body.to_vec()).context("the body is not UTF-8")?;
    Ok((text, at))
}

// === finding a demo ===

/// The proxies the demo lists.
fn demo_proxies(demo: &State) -> anyhow::Result<Vec<Proxy>> {
    let proxies: Vec<Proxy> = demo
        .proxies
        .iter()
        .map(|p| {
            let url = parse_url(&p.metrics)
                .map_err(|e| anyhow::anyhow!("the demo's state names a bad URL: {e}"))?;
            anyhow::Ok(Proxy {
                name: p.name.clone(),
                url,
            })
        })
        .collect::<Result<_, _>>()?;
    if proxies.is_empty() {
        anyhow::bail!("the running demo (pid {}) lists no proxies", demo.pid);
    }
    Ok(proxies)
}

// === output ===

fn route_name(route: &stats::Route) -> &str {
    route.as_deref().unwrap_or("[DEFAULT]")
}

fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", v * 100.0))
}

fn rps(v: f64, any: bool) -> String {
    if any {
        format!("{v:.1}rps")
    } else {
        "-".into()
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{}ms", v.round()))
}

/// Linkerd's table: columns padded to their widest cell, three spaces apart. `wide`
/// replaces SUCCESS and RPS with the effective (as the app saw) and actual (per attempt)
/// pairs, as `linkerd viz routes -o wide` does.
fn render_table(rows: &[RouteStats], service: &str, wide: bool) -> String {
    let mut header = vec!["ROUTE", "SERVICE"];
    if wide {
        header.extend([
            "EFFECTIVE_SUCCESS",
            "EFFECTIVE_RPS",
            "ACTUAL_SUCCESS",
            "ACTUAL_RPS",
        ]);
    } else {
        header.extend(["SUCCESS", "RPS"]);
    }
    header.extend(["LATENCY_P50", "LATENCY_P95", "LATENCY_P99"]);
    let mut table: Vec<Vec<String>> = vec![header.into_iter().map(String::from).collect()];
    for r in rows {
        let mut row = vec![route_name(&r.route).to_string(), service.to_string()];
        row.push(percent(r.success));
        row.push(rps(r.rps, r.success.is_some()));
        if wide {
            row.push(percent(r.actual_success));
            row.push(rps(r.actual_rps, r.actual_success.is_some()));
        }
        row.extend([ms(r.p50), ms(r.p95), ms(r.p99)]);
        table.push(row);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<w$}   ", w = widths[c]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn render_json(
    rows: &[RouteStats],
    config: &Config,
    namespace: &str,
    proxies: &[Proxy],
    per_proxy: &[(BTreeMap<stats::Route, stats::Delta>, Duration)],
) -> String {
    let routes: Vec<_> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "route": route_name(&r.route),
                "service": config.service,
                "namespace": namespace,
                "effective_success": r.success,
                "effective_rps": r.rps,
                "actual_success": r.actual_success,
                "actual_rps": r.actual_rps,
                "latency_ms_p50": r.p50,
                "latency_ms_p95": r.p95,
                "latency_ms_p99": r.p99,
            })
        })
        .collect();
    let scraped: Vec<_> = proxies
        .iter()
        .zip(per_proxy)
        .map(|(p, (_, elapsed))| {
            serde_json::json!({
                "name": p.name,
                "url": p.url.to_string(),
                "elapsed_seconds": elapsed.as_secs_f64(),
            })
        })
        .collect();
    let doc = serde_json::json!({
        "window_seconds": config.window.as_secs_f64(),
        "proxies": scraped,
        "routes": routes,
    });
    let mut out = serde_json::to_string_pretty(&doc).expect("a JSON value always serializes");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: RoutesArgs,
    }

    fn config(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("routes").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Config::try_from(cli.args).map_err(|e| e.to_string())
    }

    #[test]
    fn validates_flags() {
        let c = config(&["svc/web", "-n", "demo", "--metrics", "127.0.0.1:9990"]).expect("ok");
        assert_eq!(
            (c.service.as_str(), c.namespace.as_deref()),
            ("web", Some("demo"))
        );
        let urls: Vec<String> = c
            .proxies
            .expect("given")
            .iter()
            .map(|p| p.url.to_string())
            .collect();
        assert_eq!(urls, ["http://127.0.0.1:9990/metrics"]);
        assert_eq!(c.window, Duration::from_secs(5));
        assert!(config(&["deployment/web"]).expect("ok").proxies.is_none());
        for (args, want) in [
            (&["pod/web"][..], "unknown resource type"),
            (&["web"], "not TYPE/NAME"),
            (&["svc/Web"], "not a DNS label"),
            (&["svc/web", "-n", ""], "not a DNS label"),
            (
                &["svc/web", "--metrics", "https://x:1/metrics"],
                "only http://",
            ),
            (&["svc/web", "--metrics", "http:///metrics"], "--metrics"),
            (&["svc/web", "--window", "0s"], "greater than zero"),
            (&["svc/web", "--window", "2h"], "longer than the maximum"),
            (&["svc/web", "-o", "yaml"], "invalid value"),
        ] {
            let err = config(args).expect_err(want);
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn renders_the_table() {
        let rows = [
            RouteStats {
                route: Some("GET /api/list".into()),
                success: Some(0.9),
                rps: 30.0,
                actual_success: Some(0.75),
                actual_rps: 36.04,
                p50: Some(2.5),
                p95: Some(4.75),
                p99: Some(4.95),
            },
            RouteStats {
                route: None,
                success: None,
                rps: 0.0,
                actual_success: None,
                actual_rps: 0.0,
                p50: None,
                p95: None,
                p99: None,
            },
        ];
        assert_eq!(
            render_table(&rows, "web", false),
            "ROUTE           SERVICE   SUCCESS   RPS       LATENCY_P50   LATENCY_P95   LATENCY_P99\n\
             GET /api/list   web       90.00%    30.0rps   3ms           5ms           5ms\n\
             [DEFAULT]       web       -         -         -             -             -\n"
        );
        let wide = render_table(&rows, "web", true);
        assert!(wide.starts_with("ROUTE           SERVICE   EFFECTIVE_SUCCESS   EFFECTIVE_RPS   ACTUAL_SUCCESS   ACTUAL_RPS   LATENCY_P50"), "{wide}");
        assert!(
            wide.contains("90.00%              30.0rps         75.00%           36.0rps"),
            "{wide}"
        );
    }
}
