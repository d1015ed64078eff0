//! `mesh-bench probe`: a blocking HTTP/1.1 GET, retried until it answers 200. The
//! orchestrator runs it inside a namespace (`ip netns exec`) to wait for readiness and to
//! read a proxy's `/metrics`, so that it needs no curl.

use anyhow::{bail, Context as _};
use std::{
    io::{Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    time::{Duration, Instant},
};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// `http://host:port/path`
    url: String,
    /// Give up after this long.
    #[arg(long, default_value = "10s", value_parser = mesh_api::duration::parse)]
    pub(crate) timeout: Duration,
    /// Print the body of the 200 response on stdout.
    #[arg(long)]
    print: bool,
}

pub(crate) fn main(args: Args) -> anyhow::Result<()> {
    let rest = args
        .url
        .strip_prefix("http://")
        .context("only http:// URLs")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let deadline = Instant::now() + args.timeout;
    loop {
        let last = match get(authority, path) {
            Ok((200, body)) => {
                if args.print {
                    std::io::stdout().write_all(&body)?;
                }
                return Ok(());
            }
            Ok((status, _)) => format!("status {status}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "{} did not answer 200 within {:?}: {last}",
                args.url,
                args.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get(authority: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let addr = authority.to_socket_addrs()?.next().context("no address")?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("incomplete response")?;
    let head = std::str::from_utf8(&buf[..head_end])?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    Ok((status, buf[head_end + 4..].to_vec()))
}
