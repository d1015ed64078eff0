//! `mesh routes TYPE/NAME`: per-route golden metrics of a service's ServiceProfile, as
//! every client proxy sees them, like `linkerd viz routes`, from the controller's
//! metrics API (`/api/routes`), wherever `Api::locate` finds it. Against the demo
//! the namespace defaults to the demo's, and a service the demo does not have is an
//! error.
//!
//! The table's numbers are of the requests as the application saw them (after
//! retries); `-o wide` shows them as `EFFECTIVE_*` beside the attempts the proxies sent
//! (`ACTUAL_*`: with retries, more of them and a lower success rate), as Linkerd's
//! `routes -o wide` does.

use crate::{
    api::answer,
    stat::{Output, Scope, ValidScope},
    table, UsageError,
};

/// Flags of `mesh routes`.
#[derive(Debug, clap::Args)]
pub struct RoutesArgs {
    /// What to show routes for: `svc/NAME` (or `service/NAME`): the routes of NAME's
    /// ServiceProfile as seen by every client proxy. `deploy/NAME` (`deployment/NAME`)
    /// means the service of the same name for now.
    #[arg(value_name = "TYPE/NAME")]
    target: String,

    #[command(flatten)]
    scope: Scope,

    /// Output format: the table, `wide` (effective and actual success and rps: requests
    /// after retries, and attempts) or `json` (the controller's `/api/routes` answer).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// A validated `mesh routes`: nothing has been read or connected yet.
#[derive(Debug)]
pub struct Config {
    service: String,
    scope: ValidScope,
    output: Output,
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
        crate::dns_label("the name", name)?;
        Ok(Self {
            service: name.to_string(),
            scope: args.scope.try_into()?,
            output: args.output,
        })
    }
}

// === run ===

/// Asks the controller and prints the routes.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (api, namespace) = config.scope.locate().await?;
    if let (Some(demo), Some(ns)) = (&api.demo, &namespace) {
        demo.check_service(&config.service, ns)?;
    }
    let resource = format!("svc/{}", config.service);
    let params = config.scope.query(&resource, namespace.as_deref());
    let doc = api.get_json("/api/routes", &params).await?;
    let out = match config.output {
        Output::Json => table::json(&doc),
        _ => {
            let routes: answer::Routes = answer::read(&doc, "routes")?;
            if routes.routes.is_empty() {
                crate::note(&format!(
                    "no route metrics for service {}{} over the last {}: does it have a \
                     ServiceProfile, and do meshed clients call it?",
                    config.service,
                    namespace.map_or(String::new(), |ns| format!(".{ns}")),
                    config.scope.window,
                ));
            }
            render_table(
                &routes.routes,
                &config.service,
                config.output == Output::Wide,
            )
        }
    };
    crate::out(&out);
    Ok(())
}

// === output ===

/// Linkerd's table: `ROUTE SERVICE SUCCESS RPS LATENCY_P50 LATENCY_P95 LATENCY_P99`, the
/// default route (what no route matched) as `[DEFAULT]`; `wide` splits success and rps
/// into `EFFECTIVE_*` (requests) and `ACTUAL_*` (attempts).
fn render_table(routes: &[answer::Route], service: &str, wide: bool) -> String {
    let rates: &[&str] = match wide {
        true => &[
            "EFFECTIVE_SUCCESS",
            "EFFECTIVE_RPS",
            "ACTUAL_SUCCESS",
            "ACTUAL_RPS",
        ],
        false => &["SUCCESS", "RPS"],
    };
    let header: Vec<&str> = ["ROUTE", "SERVICE"]
        .into_iter()
        .chain(rates.iter().copied())
        .chain(["LATENCY_P50", "LATENCY_P95", "LATENCY_P99"])
        .collect();
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            let mut row = vec![
                r.route.as_deref().unwrap_or("[DEFAULT]").to_string(),
                service.to_string(),
                table::percent(r.success_rate),
                table::rps(r.rps, r.success_rate.is_some()),
            ];
            if wide {
                let (success, rps) = r.actual.map_or((None, 0.0), |a| (a.success_rate, a.rps));
                row.push(table::percent(success));
                row.push(table::rps(rps, success.is_some()));
            }
            row.extend([
                table::ms(r.latency_ms.p50),
                table::ms(r.latency_ms.p95),
                table::ms(r.latency_ms.p99),
            ]);
            row
        })
        .collect();
    table::render(&header, &rows)
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
        let c = config(&["svc/web", "-n", "demo", "--api-addr", "127.0.0.1:8084"]).expect("ok");
        assert_eq!(c.service, "web");
        assert_eq!(c.scope.window, "1m");
        let c = config(&["deployment/web", "--window", "10s"]).expect("ok");
        assert_eq!(
            (c.service.as_str(), c.scope.window.as_str()),
            ("web", "10s")
        );
        for (args, want) in [
            (&["pod/web"][..], "unknown resource type"),
            (&["web"], "not TYPE/NAME"),
            (&["svc/Web"], "not a DNS label"),
            (&["svc/web", "-n", ""], "not a DNS label"),
            (&["svc/web", "--api-addr", "localhost"], "--api-addr"),
            (&["svc/web", "--window", "0s"], "greater than zero"),
            (&["svc/web", "-o", "yaml"], "invalid value"),
        ] {
            let err = config(args).expect_err(want);
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn renders_the_table() {
        let doc = serde_json::json!({"window_seconds": 60.0, "routes": [
            {"dst": "web.demo.svc.cluster.local:80", "route": "GET /api/list",
             "responses": {"success": 27, "failure": 3}, "success_rate": 0.9, "rps": 30.0,
             "latency_ms": {"p50": 2.5, "p95": 4.75, "p99": 4.95}, "seconds": 1.0},
            {"dst": "web.demo.svc.cluster.local:80", "route": null,
             "responses": {"success": 0, "failure": 0}, "success_rate": null, "rps": 0.0,
             "latency_ms": {"p50": null, "p95": null, "p99": null}, "seconds": 0.0}
        ], "overflow": {"pods": 0, "samples": 0}});
        let routes: answer::Routes = answer::read(&doc, "routes").expect("reads");
        assert_eq!(
            render_table(&routes.routes, "web", false),
            "ROUTE           SERVICE   SUCCESS   RPS       LATENCY_P50   LATENCY_P95   LATENCY_P99\n\
             GET /api/list   web       90.00%    30.0rps   3ms           5ms           5ms\n\
             [DEFAULT]       web       -         -         -             -             -\n"
        );
    }

    #[test]
    fn wide_shows_attempts_beside_requests() {
        let doc = serde_json::json!({"window_seconds": 60.0, "routes": [
            {"dst": "voting.demo.svc.cluster.local:80", "route": "POST /vote",
             "responses": {"success": 20, "failure": 0}, "success_rate": 1.0, "rps": 2.0,
             "latency_ms": {"p50": 5.0, "p95": 9.5, "p99": 9.9}, "seconds": 10.0,
             "actual": {"responses": {"success": 20, "failure": 6},
                        "success_rate": 0.7692307692307693, "rps": 2.6}},
            {"dst": "voting.demo.svc.cluster.local:80", "route": null,
             "responses": {"success": 3, "failure": 0}, "success_rate": 1.0, "rps": 0.3,
             "latency_ms": {"p50": 1.0, "p95": 1.0, "p99": 1.0}, "seconds": 10.0,
             "actual": null}
        ], "overflow": {"pods": 0, "samples": 0}});
        let routes: answer::Routes = answer::read(&doc, "routes").expect("reads");
        let table = render_table(&routes.routes, "voting", true);
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            [
                "ROUTE",
                "SERVICE",
                "EFFECTIVE_SUCCESS",
                "EFFECTIVE_RPS",
                "ACTUAL_SUCCESS",
                "ACTUAL_RPS",
                "LATENCY_P50",
                "LATENCY_P95",
                "LATENCY_P99"
            ]
        );
        assert_eq!(
            lines[1],
            [
                "POST", "/vote", "voting", "100.00%", "2.0rps", "76.92%", "2.6rps", "5ms", "10ms",
                "10ms"
            ]
        );
        assert_eq!(
            lines[2],
            [
                "[DEFAULT]",
                "voting",
                "100.00%",
                "0.3rps",
                "-",
                "-",
                "1ms",
                "1ms",
                "1ms"
            ]
        );
    }
}
