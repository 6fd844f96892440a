//! The HTTP push endpoint: an application `POST`s its figures to `http://ADDR/` with a body of
//! statsd lines (`web.latency:12.5|ms`, `web.errors:1|c`, one per line, the same as over UDP);
//! the answer is `204 No Content`, or `400` / `413` / `405` with the reason. Bodies are at most
//! [`MAX_BODY`] bytes; a connection gets [`TIMEOUT`] to send its request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

pub const MAX_BODY: usize = 64 * 1024;
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `listener` until the process ends: each request's body goes to `take`.
pub fn serve(listener: TcpListener, take: impl Fn(&str) + Send + 'static) {
    for stream in listener.incoming().flatten() {
        let _ = stream.set_read_timeout(Some(TIMEOUT));
        let _ = stream.set_write_timeout(Some(TIMEOUT));
        let answer = match read_request(&stream) {
            Ok(body) => {
                take(&body);
                "204 No Content".to_string()
            }
            Err(status) => status,
        };
        let mut s = stream;
        let _ = write!(s, "HTTP/1.1 {answer}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
}

/// The request's body, or the status line to answer with.
fn read_request(stream: &TcpStream) -> Result<String, String> {
    let mut r = BufReader::new(stream.take(MAX_BODY as u64 + 8192));
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| format!("400 Bad Request ({e})"))?;
    let mut parts = line.split_whitespace();
    let (method, _path, version) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        return Err("400 Bad Request".into());
    }
    if method != "POST" {
        return Err("405 Method Not Allowed".into());
    }
    let mut length: Option<usize> = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).map_err(|e| format!("400 Bad Request ({e})"))? == 0 {
            return Err("400 Bad Request (headers cut short)".into());
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = Some(value.trim().parse().map_err(|_| "400 Bad Request (Content-Length)".to_string())?);
        }
    }
    let length = length.ok_or("411 Length Required")?;
    if length > MAX_BODY {
        return Err("413 Content Too Large".into());
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).map_err(|e| format!("400 Bad Request ({e})"))?;
    String::from_utf8(body).map_err(|_| "400 Bad Request (the body is not UTF-8)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn post(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.lines().next().unwrap_or("").to_string()
    }

    #[test]
    fn pushed_lines_arrive_and_bad_requests_are_answered_with_the_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || serve(listener, move |b| sink.lock().unwrap().push(b.to_string())));
        let body = "web.latency:12|ms\nweb.errors:1|c\n";
        let ok = post(addr, format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
        assert_eq!(ok, "HTTP/1.1 204 No Content");
        assert_eq!(got.lock().unwrap().as_slice(), [body.to_string()]);
        assert!(post(addr, b"GET / HTTP/1.1\r\n\r\n").contains("405"));
        assert!(post(addr, b"POST / HTTP/1.1\r\n\r\n").contains("411"));
        assert!(post(addr, format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1).as_bytes()).contains("413"));
        assert!(post(addr, b"garbage\r\n\r\n").contains("400"));
        assert_eq!(got.lock().unwrap().len(), 1, "nothing refused was taken");
    }
}
