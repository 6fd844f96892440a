//! Length-delimited protobuf frames over a byte stream (a pipe): a varint length, then the
//! message, as `prost`'s `encode_length_delimited` writes them. The agent and its libvirt driver
//! speak `DriverRequest`/`DriverReply` this way (`proto/presage/v1/libvirt_driver.proto`).

use std::io::{self, Read, Write};

/// The largest frame either side accepts. An observation of a thousand VMs is well under 1 MiB;
/// a larger length prefix means the stream is not presage's.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("reading the stream: {0}")]
    Io(#[from] io::Error),
    #[error("the stream ended inside a frame")]
    Truncated,
    #[error("a frame's length prefix is not a valid varint")]
    BadLength,
    #[error("a frame of {0} bytes is over the limit of {MAX_FRAME_BYTES}")]
    TooLarge(u64),
    #[error("a frame does not decode as {what}: {source}")]
    Decode { what: &'static str, source: prost::DecodeError },
}

/// Writes `message` as one frame and flushes.
pub fn write_frame<M: prost::Message>(out: &mut impl Write, message: &M) -> io::Result<()> {
    out.write_all(&message.encode_length_delimited_to_vec())?;
    out.flush()
}

/// Reads the next frame; `Ok(None)` when the stream ends cleanly between frames.
pub fn read_frame<M: prost::Message + Default>(input: &mut impl Read) -> Result<Option<M>, FrameError> {
    let mut len: u64 = 0;
    let mut shift = 0;
    loop {
        let mut byte = [0u8; 1];
        match input.read(&mut byte) {
            Ok(0) if shift == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        if shift >= 64 {
            return Err(FrameError::BadLength);
        }
        len |= u64::from(byte[0] & 0x7f) << shift;
        shift += 7;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    if len > MAX_FRAME_BYTES as u64 {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len as usize];
    input.read_exact(&mut body).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { FrameError::Truncated } else { e.into() })?;
    let what = std::any::type_name::<M>().rsplit("::").next().unwrap_or("a message");
    M::decode(body.as_slice()).map(Some).map_err(|source| FrameError::Decode { what, source })
}

#[cfg(all(test, feature = "cluster"))]
mod tests {
    use super::*;
    use crate::pb::{DriverReply, DriverRequest, DriverVm, driver_request::Call};

    fn request(id: u64, vm: &str) -> DriverRequest {
        DriverRequest { id, call: Some(Call::Inspect(DriverVm { vm_id: vm.into() })) }
    }

    #[test]
    fn frames_round_trip_back_to_back_and_end_cleanly() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &request(1, "a")).unwrap();
        write_frame(&mut buf, &request(2, &"x".repeat(300))).unwrap();
        let mut r = buf.as_slice();
        assert_eq!(read_frame::<DriverRequest>(&mut r).unwrap(), Some(request(1, "a")));
        assert_eq!(read_frame::<DriverRequest>(&mut r).unwrap(), Some(request(2, &"x".repeat(300))));
        assert!(read_frame::<DriverRequest>(&mut r).unwrap().is_none());
    }

    #[test]
    fn broken_streams_are_errors_that_say_what_is_wrong() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &request(7, "vm")).unwrap();
        let cut = &buf[..buf.len() - 2];
        assert!(matches!(read_frame::<DriverRequest>(&mut &cut[..]), Err(FrameError::Truncated)));
        let huge = [0xff, 0xff, 0xff, 0xff, 0x7f];
        let e = read_frame::<DriverRequest>(&mut &huge[..]).unwrap_err();
        assert!(matches!(e, FrameError::TooLarge(_)), "{e}");
        let endless = [0xff; 12];
        assert!(matches!(read_frame::<DriverRequest>(&mut &endless[..]), Err(FrameError::BadLength)));
        // A length that fits, with bytes that are not a DriverReply (field 1 as a string of 200 bytes).
        let garbage = [4u8, 0x0a, 0xc8, 0x01, 0x00];
        let e = read_frame::<DriverReply>(&mut &garbage[..]).unwrap_err();
        assert!(e.to_string().contains("DriverReply"), "{e}");
    }
}
