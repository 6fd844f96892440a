//! Probing a local HTTP endpoint: one `GET` per probe over a fresh connection; its latency is
//! the request's, a 2xx or 3xx answer is a success, anything else (or no answer within the
//! timeout) a failure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTarget {
    pub host: String,
    pub addr: SocketAddr,
    pub path: String,
}

impl HttpTarget {
    /// `http://host:port/path` (port 80 when absent).
    pub fn parse(url: &str) -> Result<HttpTarget, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?}: only http:// endpoints can be probed"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{url:?} is not a probe URL"));
        }
        let with_port = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url:?}: the host has no address"))?;
        let host = authority.split(':').next().unwrap_or(authority).to_string();
        Ok(HttpTarget { host, addr, path: path.to_string() })
    }

    /// One probe: (latency in ms, success).
    pub fn probe(&self, timeout: Duration) -> (f64, bool) {
        let start = Instant::now();
        let ok = self.get(timeout).unwrap_or(false);
        (start.elapsed().as_secs_f64() * 1e3, ok)
    }

    fn get(&self, timeout: Duration) -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&self.addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        // One write: `write!` on the socket would send each piece of the format as its own
        // segment, and a server answering after the first would see the rest as unread.
        let request =
            format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: presage-guest\r\n\r\n", self.path, self.host);
        s.write_all(request.as_bytes())?;
        // The status line is all that is judged; the rest is read (bounded) and dropped.
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        let status = std::str::from_utf8(&head[9..12]).ok().and_then(|c| c.parse::<u16>().ok()).unwrap_or(0);
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < 1 << 20 {
            match s.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        Ok((200..400).contains(&status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_or_refused() {
        let t = HttpTarget::parse("http://127.0.0.1:8080/health").unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (8080, "/health"));
        assert_eq!(HttpTarget::parse("http://127.0.0.1").unwrap().path, "/");
        assert!(HttpTarget::parse("https://x/").unwrap_err().contains("only http://"));
        assert!(HttpTarget::parse("http:///x").is_err());
    }

    #[test]
    fn a_probe_measures_a_real_server_and_judges_its_status() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (i, s) in listener.incoming().take(2).enumerate() {
                let mut s = s.unwrap();
                // The whole request, then the answer (closing with a request unread would
                // reset the connection under the client).
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let status = if i == 0 { "200 OK" } else { "503 Service Unavailable" };
                let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok");
            }
        });
        let t = HttpTarget::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let (ms, ok) = t.probe(Duration::from_secs(5));
        assert!(ok && ms >= 0.0);
        assert!(!t.probe(Duration::from_secs(5)).1, "a 503 is a failure");
        // Nothing listens any more: a failure, not a hang or a panic.
        assert!(!t.probe(Duration::from_millis(200)).1);
    }
}
