//! The guest's end of the port: opened (a virtio-serial device, or a Unix socket), read on a
//! thread for the host's hellos, written with sealed reports. A failed write drops the
//! connection; the next send opens it again and waits for a new hello.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use presage_protocol::guest::{GuestSession, Piece, Splitter};
use presage_protocol::guest_pb::GuestReport;

use crate::config::PortPath;

trait Duplex: Write + Send {}
impl<T: Write + Send> Duplex for T {}

pub struct PortLink {
    path: PortPath,
    writer: Option<Box<dyn Duplex>>,
    session: Arc<Mutex<Option<GuestSession>>>,
}

impl PortLink {
    pub fn new(path: PortPath) -> PortLink {
        PortLink { path, writer: None, session: Arc::new(Mutex::new(None)) }
    }

    fn open(&mut self) -> Result<(), String> {
        let (reader, writer): (Box<dyn Read + Send>, Box<dyn Duplex>) = match &self.path {
            PortPath::Device(p) => {
                let f = std::fs::OpenOptions::new().read(true).write(true).open(p).map_err(|e| format!("opening {}: {e}", p.display()))?;
                let r = f.try_clone().map_err(|e| format!("{}: {e}", p.display()))?;
                (Box::new(r), Box::new(f))
            }
            PortPath::Unix(p) => {
                let s = std::os::unix::net::UnixStream::connect(p).map_err(|e| format!("connecting to {}: {e}", p.display()))?;
                let r = s.try_clone().map_err(|e| format!("{}: {e}", p.display()))?;
                (Box::new(r), Box::new(s))
            }
        };
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let session = self.session.clone();
        std::thread::Builder::new()
            .name("port-reader".into())
            .spawn(move || read_hellos(reader, &session))
            .map_err(|e| format!("starting the port reader: {e}"))?;
        self.writer = Some(writer);
        Ok(())
    }

    /// Seals and sends `report`; an error says why nothing was sent.
    pub fn send(&mut self, report: &GuestReport) -> Result<(), String> {
        if self.writer.is_none() {
            self.open()?;
        }
        let frame = {
            let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
            let Some(s) = session.as_mut() else { return Err("no hello from the host yet: report not sent".into()) };
            s.seal(report).map_err(|e| e.to_string())?
        };
        let w = self.writer.as_mut().expect("opened above");
        if let Err(e) = w.write_all(&frame).and_then(|_| w.flush()) {
            self.writer = None;
            return Err(format!("writing to the port: {e}"));
        }
        Ok(())
    }
}

/// Reads the host's messages: each hello starts a new session; anything else is ignored.
fn read_hellos(mut reader: Box<dyn Read + Send>, session: &Mutex<Option<GuestSession>>) {
    let mut splitter = Splitter::default();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => {
                // A virtio-serial port reads 0 while no host is connected: wait and read again.
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Ok(n) => {
                for piece in splitter.push(&buf[..n]) {
                    if let Piece::Message(m) = piece {
                        match GuestSession::from_hello(&m) {
                            Ok(s) => *session.lock().unwrap_or_else(|p| p.into_inner()) = Some(s),
                            Err(e) => eprintln!("presage-guest: {e}"),
                        }
                    }
                }
            }
        }
    }
}
