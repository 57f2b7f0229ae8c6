//! A byte sink and JSON string escaping that never allocate.
//!
//! The library encodes an event into a per-thread staging buffer, or, when
//! that is busy or too small, twice: once into [`Counter`] to learn its
//! length, then straight into the reserved region of the log. No event-sized
//! buffer is ever needed on the stack, so hooks keep a small stack even on a
//! signal's alternate stack.

/// Something bytes can be written to. Implementations never fail: a sink that
/// runs out of room drops the excess and remembers it did.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

/// Counts bytes without storing them.
#[derive(Default)]
pub struct Counter(pub usize);

impl Sink for Counter {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// Writes into a fixed slice; `overflow` is set when bytes were dropped.
pub struct SliceSink<'a> {
    pub buf: &'a mut [u8],
    pub len: usize,
    pub overflow: bool,
}

impl<'a> SliceSink<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceSink {
            buf,
            len: 0,
            overflow: false,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Sink for SliceSink<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let room = self.buf.len() - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        if n < bytes.len() {
            self.overflow = true;
        }
    }
}

/// Only for tests and the runner: collect into a `Vec`.
impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Bytes a JSON string holds as they are: printable ASCII but `"` and `\`.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};

/// Writes `bytes` as a JSON string (with quotes). Invalid UTF-8 sequences
/// become U+FFFD, so the output is always valid JSON; callers that must keep
/// the exact bytes use [`put_str_checked`] and [`put_hex_string`].
#[inline]
pub fn put_str<S: Sink + ?Sized>(s: &mut S, bytes: &[u8]) {
    put_str_checked(s, bytes);
}

/// [`put_str`], returning whether `bytes` was valid UTF-8 (the JSON string
/// is then exact). Paths are nearly always plain ASCII: one table scan, one
/// write.
#[inline]
pub fn put_str_checked<S: Sink + ?Sized>(s: &mut S, bytes: &[u8]) -> bool {
    s.put(b"\"");
    let exact = if bytes.iter().all(|&b| PLAIN[b as usize]) {
        s.put(bytes);
        true
    } else {
        put_str_escaped(s, bytes)
    };
    s.put(b"\"");
    exact
}

fn put_str_escaped<S: Sink + ?Sized>(s: &mut S, bytes: &[u8]) -> bool {
    let mut exact = true;
    let mut rest = bytes;
    while !rest.is_empty() {
        match core::str::from_utf8(rest) {
            Ok(valid) => {
                put_escaped(s, valid.as_bytes());
                break;
            }
            Err(e) => {
                exact = false;
                let (valid, after) = rest.split_at(e.valid_up_to());
                put_escaped(s, valid);
                s.put("\u{FFFD}".as_bytes());
                let skip = e.error_len().unwrap_or(after.len());
                rest = &after[skip..];
            }
        }
    }
    exact
}

/// Escapes valid UTF-8: quotes, backslashes and control characters.
fn put_escaped<S: Sink + ?Sized>(s: &mut S, valid: &[u8]) {
    let mut start = 0;
    for (i, &b) in valid.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => {
                s.put(&valid[start..i]);
                s.put(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 15) as usize],
                ]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        s.put(&valid[start..i]);
        s.put(esc);
        start = i + 1;
    }
    s.put(&valid[start..]);
}

/// Writes the bytes as a JSON string of lowercase hex digits.
pub fn put_hex_string<S: Sink + ?Sized>(s: &mut S, bytes: &[u8]) {
    s.put(b"\"");
    for chunk in bytes.chunks(64) {
        let mut tmp = [0u8; 128];
        for (i, &b) in chunk.iter().enumerate() {
            tmp[2 * i] = HEX[(b >> 4) as usize];
            tmp[2 * i + 1] = HEX[(b & 15) as usize];
        }
        s.put(&tmp[..chunk.len() * 2]);
    }
    s.put(b"\"");
}

/// "00" "01" … "99": two digits per division.
const DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

#[inline]
pub fn put_u64<S: Sink + ?Sized>(s: &mut S, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    while v >= 100 {
        let d = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
    }
    if v >= 10 {
        let d = v as usize * 2;
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
    } else {
        i -= 1;
        tmp[i] = b'0' + v as u8;
    }
    s.put(&tmp[i..]);
}

/// `0x` and the lowercase hex digits of `v`, no leading zeros (for
/// addresses in human-readable lines, not in JSON).
pub fn put_hex_u64<S: Sink + ?Sized>(s: &mut S, v: u64) {
    let mut tmp = [0u8; 18];
    let mut i = tmp.len();
    let mut v = v;
    loop {
        i -= 1;
        tmp[i] = HEX[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    i -= 2;
    tmp[i..i + 2].copy_from_slice(b"0x");
    s.put(&tmp[i..]);
}

pub fn put_i64<S: Sink + ?Sized>(s: &mut S, v: i64) {
    if v < 0 {
        s.put(b"-");
    }
    put_u64(s, v.unsigned_abs());
}

pub fn put_bool<S: Sink + ?Sized>(s: &mut S, v: bool) {
    s.put(if v { b"true" } else { b"false" });
}

/// True when `bytes` is valid UTF-8 (then the JSON string is exact).
pub fn is_utf8(bytes: &[u8]) -> bool {
    core::str::from_utf8(bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(b: &[u8]) -> String {
        let mut v = Vec::new();
        put_str(&mut v, b);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn escapes_round_trip_through_serde() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "new\nline",
            "tab\tctl\u{1}\u{7f}",
            "ünïcødé ✓",
        ] {
            let out = enc(s.as_bytes());
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn invalid_utf8_becomes_replacement_and_stays_valid_json() {
        let out = enc(b"a\xffb\xc3");
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn put_str_says_whether_the_bytes_were_exact() {
        let mut v = Vec::new();
        assert!(put_str_checked(&mut v, b"plain/ascii.txt"));
        assert!(put_str_checked(&mut v, "ünï\"q".as_bytes()));
        assert!(!put_str_checked(&mut v, b"bad\xff"));
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "\"plain/ascii.txt\"\"ünï\\\"q\"\"bad\u{FFFD}\""
        );
    }

    #[test]
    fn every_byte_round_trips_or_is_replaced() {
        for b in 0u8..=255 {
            let input = [b'a', b, b'z'];
            let out = enc(&input);
            let back: String = serde_json::from_str(&out).unwrap();
            match core::str::from_utf8(&input) {
                Ok(text) => assert_eq!(back, text),
                Err(_) => assert_eq!(back, "a\u{FFFD}z"),
            }
        }
    }

    #[test]
    fn numbers() {
        for v in [
            0u64,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            12345,
            1795296063879000442,
        ] {
            let mut out = Vec::new();
            put_u64(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
        let mut v = Vec::new();
        put_i64(&mut v, i64::MIN);
        v.push(b' ');
        put_u64(&mut v, 0);
        v.push(b' ');
        put_u64(&mut v, u64::MAX);
        assert_eq!(
            String::from_utf8(v).unwrap(),
            format!("{} 0 {}", i64::MIN, u64::MAX)
        );
    }

    #[test]
    fn hex() {
        let mut v = Vec::new();
        put_hex_string(&mut v, &[0x00, 0xff, 0x2f]);
        assert_eq!(v, b"\"00ff2f\"");
    }

    #[test]
    fn slice_sink_reports_overflow() {
        let mut buf = [0u8; 4];
        let mut s = SliceSink::new(&mut buf);
        s.put(b"abc");
        assert!(!s.overflow);
        s.put(b"de");
        assert!(s.overflow);
        assert_eq!(s.as_bytes(), b"abcd");
    }
}
