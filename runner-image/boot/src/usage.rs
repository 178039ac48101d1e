//! Sampling the task's own CPU and memory while the runner runs, for right-sizing advice
//! (`tasuki_core::domain::usage`).
//!
//! Why here: only the task can see its own usage at this grain (Container Insights aggregates per
//! minute and per cluster, and costs), and `tasuki-boot` outlives the runner. The ECS task metadata
//! endpoint v4 (`ECS_CONTAINER_METADATA_URI_V4`, plain HTTP on a link-local address) gives the
//! task's limits (`/task`) and every container's Docker stats (`/task/stats`)
//! (<https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-metadata-endpoint-v4-fargate.html>).
//!
//! Sampling must never cost the job anything: it runs on its own thread, every request has short
//! timeouts, every failure is only counted, and at exit the boot takes what arrived without
//! waiting for a request in flight. The thread needs no HTTP library: one GET per connection,
//! HTTP/1.1 with `Connection: close`, a body delimited by `Content-Length`, chunked encoding (Go's
//! `net/http`, which the ECS agent uses, chunks a large body written without a length) or the end
//! of the connection (RFC 9112 §6.3).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tasuki_core::domain::usage::{parse_task_limits, parse_task_stats, Limits, TaskSample};

/// The variable ECS (Fargate platform ≥ 1.4.0, EC2 agent ≥ 1.39.0) sets in every container.
pub const METADATA_URI: &str = "ECS_CONTAINER_METADATA_URI_V4";
/// How often the task stats are read.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// The endpoint is on the task's own link-local network: it answers in milliseconds or not at all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// A task stats answer for two containers is about 10 KB; anything past this is not one.
const MAX_BODY: usize = 1 << 20;

/// Where the task metadata endpoint is: `http://<host>[:port]<path>` from [`METADATA_URI`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    authority: String,
    path: String,
}

impl Endpoint {
    /// `None` for anything but a plain `http://` URI (the endpoint is never HTTPS).
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.trim().strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        Some(Self {
            authority: authority.to_string(),
            path: path.trim_end_matches('/').to_string(),
        })
    }

    fn socket_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        let with_port = if self.authority.contains(':') {
            self.authority.clone()
        } else {
            format!("{}:80", self.authority)
        };
        with_port.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the endpoint")
        })
    }

    /// `GET <path><suffix>`: the body of a 200 answer, else why not (one line, no body quoted).
    pub fn get(&self, suffix: &str) -> Result<String, String> {
        let addr = self.socket_addr().map_err(|e| e.to_string())?;
        let mut stream =
            TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        write!(
            stream,
            "GET {}{suffix} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
            self.path, self.authority
        )
        .map_err(|e| e.to_string())?;
        read_response(BufReader::new(stream.take(MAX_BODY as u64 + 64 * 1024)))
    }
}

/// Reads one HTTP/1.1 response; the body of a 200, else `HTTP <status>`.
fn read_response(mut reader: impl BufRead) -> Result<String, String> {
    let io = |e: std::io::Error| e.to_string();
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| "not an HTTP answer".to_string())?;
    let mut length = None;
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            return Err("the answer ended in its headers".into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().ends_with("chunked");
            }
        }
    }
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    let body = if chunked {
        read_chunked(&mut reader)?
    } else if let Some(length) = length {
        if length > MAX_BODY {
            return Err(format!("an answer of {length} bytes"));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).map_err(io)?;
        body
    } else {
        let mut body = Vec::new();
        reader.read_to_end(&mut body).map_err(io)?;
        body
    };
    if body.len() > MAX_BODY {
        return Err("an answer over 1 MiB".into());
    }
    String::from_utf8(body).map_err(|_| "an answer that is not UTF-8".to_string())
}

/// A chunked body (RFC 9112 §7.1): hex size lines, data, a zero-size chunk, trailers.
fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>, String> {
    let io = |e: std::io::Error| e.to_string();
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(io)?;
        let size = line.trim_end().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| "a malformed chunked answer".to_string())?;
        if size == 0 {
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err("an answer over 1 MiB".into());
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).map_err(io)?;
        line.clear();
        reader.read_line(&mut line).map_err(io)?;
    }
}

/// What the sampling thread reports.
enum Event {
    Limits(Limits),
    Sample(TaskSample),
    Failed(String),
}

/// The sampling thread; [`Sampler::finish`] stops it and returns what it gathered.
pub struct Sampler {
    events: mpsc::Receiver<Event>,
    stop: mpsc::Sender<()>,
}

/// What sampling gathered by the end.
#[derive(Debug)]
pub struct Gathered {
    pub limits: Option<Limits>,
    pub samples: Vec<TaskSample>,
    pub failures: u32,
    pub last_failure: Option<String>,
}

impl Sampler {
    /// Reads the limits once (until they come) and the task stats every `interval`, from now
    /// until [`Sampler::finish`]. The thread inherits the blocked stop signals, so it never takes
    /// one meant for the supervisor.
    pub fn start(endpoint: Endpoint, interval: Duration) -> std::io::Result<Self> {
        let (events_tx, events) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("usage".into())
            .spawn(move || sample(&endpoint, interval, &events_tx, &stop_rx))?;
        Ok(Self { events, stop })
    }

    /// Stops the thread and takes what has arrived, without waiting for a request in flight.
    pub fn finish(self) -> Gathered {
        let _ = self.stop.send(());
        let mut gathered = Gathered {
            limits: None,
            samples: Vec::new(),
            failures: 0,
            last_failure: None,
        };
        for event in self.events.try_iter() {
            match event {
                Event::Limits(limits) => gathered.limits = Some(limits),
                Event::Sample(sample) => gathered.samples.push(sample),
                Event::Failed(why) => {
                    gathered.failures += 1;
                    gathered.last_failure = Some(why);
                }
            }
        }
        gathered
    }
}

fn sample(
    endpoint: &Endpoint,
    interval: Duration,
    events: &mpsc::Sender<Event>,
    stop: &mpsc::Receiver<()>,
) {
    let started = Instant::now();
    let mut limits_known = false;
    loop {
        if !limits_known {
            let limits = endpoint
                .get("/task")
                .and_then(|body| parse_task_limits(&body).map_err(|e| e.to_string()));
            limits_known = limits.is_ok();
            let _ = events.send(limits.map_or_else(Event::Failed, Event::Limits));
        }
        let at_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let stats = endpoint
            .get("/task/stats")
            .and_then(|body| parse_task_stats(&body).map_err(|e| e.to_string()));
        let event = match stats {
            Ok(containers) => Event::Sample(TaskSample { at_ms, containers }),
            Err(why) => Event::Failed(why),
        };
        if events.send(event).is_err() {
            return;
        }
        match stop.recv_timeout(interval) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_a_plain_http_uri_with_a_path() {
        let e = Endpoint::parse("http://169.254.170.2/v4/0123abcd-2495160603").unwrap();
        assert_eq!(e.authority, "169.254.170.2");
        assert_eq!(e.path, "/v4/0123abcd-2495160603");
        assert_eq!(
            e.socket_addr().unwrap(),
            "169.254.170.2:80".parse().unwrap()
        );
        let local = Endpoint::parse("http://127.0.0.1:5123/v4/x/").unwrap();
        assert_eq!(local.path, "/v4/x");
        assert_eq!(
            local.socket_addr().unwrap(),
            "127.0.0.1:5123".parse().unwrap()
        );
        for bad in [
            "https://169.254.170.2/v4/x",
            "169.254.170.2/v4",
            "http:///v4",
            "http://u@h/",
        ] {
            assert_eq!(Endpoint::parse(bad), None, "{bad}");
        }
    }

    fn response(text: &str) -> Result<String, String> {
        read_response(text.as_bytes())
    }

    #[test]
    fn a_response_body_is_read_by_length_by_chunks_or_to_the_end() {
        assert_eq!(
            response("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n{}{}extra").unwrap(),
            "{}{}"
        );
        assert_eq!(
            response(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n"
            )
            .unwrap(),
            "{\"a\":1}"
        );
        assert_eq!(
            response("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"b\":2}").unwrap(),
            "{\"b\":2}"
        );
    }

    #[test]
    fn anything_but_a_200_is_a_failure_that_names_the_status_only() {
        assert_eq!(
            response("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 6\r\n\r\nsecret"),
            Err("HTTP 500".to_string())
        );
        assert!(response("garbage").is_err());
        assert!(response("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n").is_err());
        assert!(response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
    }

    #[test]
    fn an_unreachable_endpoint_fails_within_the_timeouts() {
        // A port nobody listens on: refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = Endpoint::parse(&format!("http://127.0.0.1:{port}/v4/x")).unwrap();
        let started = Instant::now();
        assert!(e.get("/task/stats").is_err());
        assert!(started.elapsed() < CONNECT_TIMEOUT + IO_TIMEOUT);
    }
}
