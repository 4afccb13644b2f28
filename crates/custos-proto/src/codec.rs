//! A bounded reader for fixed binary layouts: every read is checked, trailing bytes are an error.

use crate::Error;

/// Reads fixed-size fields from a byte slice, front to back.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.buf.len() < n {
            return Err(Error::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Takes the next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Takes one byte.
    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }

    /// Takes a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Takes a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Bytes not yet read.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Succeeds only if every byte was read.
    pub fn finish(self) -> Result<(), Error> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes)
        }
    }
}

/// Splits a broker address `mqtt://host[:port][/]` into host and port (1883 when absent). Hub and device agent
/// share it so both read broker addresses the same way. `mqtts://` addresses are refused: see [`mqtt_broker`].
pub fn mqtt_endpoint(url: &str) -> Result<(&str, u16), Error> {
    match mqtt_broker(url)? {
        (_, _, true) => Err(Error::InvalidValue("not an mqtt:// URL")),
        (host, port, false) => Ok((host, port)),
    }
}

/// Splits a broker address `mqtt://host[:port][/]` or `mqtts://host[:port][/]` (MQTT over TLS) into host, port
/// (1883 or 8883 when absent) and whether it is over TLS.
pub fn mqtt_broker(url: &str) -> Result<(&str, u16, bool), Error> {
    let (rest, tls) = match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) => (rest, true),
        (None, None) => return Err(Error::InvalidValue("not an mqtt:// or mqtts:// URL")),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse()
                .map_err(|_| Error::InvalidValue("the port in the mqtt:// URL is not a number"))?,
        ),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(Error::InvalidValue("no host in the mqtt:// URL"));
    }
    Ok((host, port, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_endpoints() {
        assert_eq!(
            mqtt_endpoint("mqtt://127.0.0.1:1884/"),
            Ok(("127.0.0.1", 1884))
        );
        assert_eq!(mqtt_endpoint("mqtt://broker"), Ok(("broker", 1883)));
        assert_eq!(mqtt_broker("mqtts://broker"), Ok(("broker", 8883, true)));
        assert_eq!(mqtt_broker("mqtts://b:1"), Ok(("b", 1, true)));
        assert!(mqtt_endpoint("mqtts://broker").is_err());
        for bad in [
            "http://x:1",
            "mqtt://x:port",
            "mqtt://:1883",
            "mqtt://x:70000",
        ] {
            assert!(mqtt_endpoint(bad).is_err(), "{bad}");
        }
    }
}
