//! The firmware's only link to the outside world: ARM semihosting, which QEMU serves from the host.
//!
//! - Lines on the host's stdout ([`Out`]): `label value`, values in lowercase hex or decimal, one line each, so the
//!   test on the host compares them line by line.
//! - Files in QEMU's working directory ([`files`]): the admission build hands its handshake messages to the
//!   hub on the host this way. A message is written to `NAME.part` and renamed to `NAME.bin`, and the host does the
//!   same in the other direction, so neither side ever reads half a message.
//! - The stack's high-water mark ([`stack_peak`]), from the paint cortex-m-rt leaves at reset.
//!
//! Semihosting traps into the debugger (here QEMU) with `bkpt 0xab`; on a board without one attached it would
//! hang, which is why this is a test and measurement harness, not a deployment.

use core::fmt::Write as _;

use cortex_m_semihosting::hio::{self, HostStream};

/// Why the firmware stopped before the end.
pub enum Failure {
    /// The core refused something.
    Proto(custos_proto::Error),
    /// A semihosting call failed, or the host did not answer in time.
    Host(&'static str),
}

impl From<custos_proto::Error> for Failure {
    fn from(e: custos_proto::Error) -> Self {
        Self::Proto(e)
    }
}

/// One field of an output line.
pub enum Field<'a> {
    /// Printed as is.
    Text(&'a str),
    /// In decimal.
    Num(usize),
    /// In lowercase hex.
    Hex(&'a [u8]),
}

/// Line-oriented output on the host's stdout.
pub struct Out(HostStream);

impl Out {
    /// Opens the host's stdout.
    pub fn open() -> Result<Self, Failure> {
        hio::hstdout()
            .map(Self)
            .map_err(|()| Failure::Host("no semihosting stdout"))
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.0
            .write_all(bytes)
            .map_err(|()| Failure::Host("semihosting write failed"))
    }

    /// `label` and its fields, separated by spaces.
    pub fn line(&mut self, label: &str, fields: &[Field<'_>]) -> Result<(), Failure> {
        self.raw(label.as_bytes())?;
        for field in fields {
            self.raw(b" ")?;
            match *field {
                Field::Text(t) => self.raw(t.as_bytes())?,
                Field::Num(n) => self.num(n)?,
                Field::Hex(bytes) => self.hex(bytes)?,
            }
        }
        self.raw(b"\n")
    }

    fn hex(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        // Through a small buffer: one semihosting call per 32 bytes rather than per digit.
        for chunk in bytes.chunks(32) {
            let mut buf = [0u8; 64];
            for (i, b) in chunk.iter().enumerate() {
                buf[2 * i] = DIGITS[usize::from(b >> 4)];
                buf[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
            }
            self.raw(&buf[..2 * chunk.len()])?;
        }
        Ok(())
    }

    fn num(&mut self, mut n: usize) -> Result<(), Failure> {
        let mut buf = [0u8; 20];
        let mut at = buf.len();
        loop {
            at -= 1;
            buf[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.raw(&buf[at..])
    }

    /// `error <what>`: the last line of a failed run (`Error`'s messages name what was wrong, never a secret).
    pub fn failure(&mut self, failure: &Failure) {
        // Nothing is left to report a failure to if this fails too; the exit status still says it.
        let _ = match failure {
            Failure::Proto(e) => writeln!(self.0, "error {e}"),
            Failure::Host(what) => writeln!(self.0, "error {what}"),
        };
    }
}

/// Files in QEMU's working directory on the host.
#[cfg(feature = "admission")]
pub mod files {
    use core::ffi::CStr;

    use cortex_m_semihosting::{nr, syscall};

    use super::Failure;

    /// Opens `path` on the host; `None` if it cannot (for reading: it does not exist yet).
    fn open(path: &CStr, mode: usize) -> Option<usize> {
        // SAFETY: SYS_OPEN reads the NUL-terminated string, of the length given, which outlives the call.
        let handle = unsafe { syscall!(OPEN, path.as_ptr(), mode, path.count_bytes()) };
        (handle as isize != -1).then_some(handle)
    }

    fn close(handle: usize) {
        // SAFETY: SYS_CLOSE takes a handle SYS_OPEN returned and no memory.
        unsafe { syscall!(CLOSE, handle) };
    }

    /// Writes `bytes` to `part` (a temporary name) and renames it to `name`: the host sees the whole message or
    /// none.
    pub fn put(part: &CStr, name: &CStr, bytes: &[u8]) -> Result<(), Failure> {
        let handle = open(part, nr::open::W_TRUNC_BINARY)
            .ok_or(Failure::Host("cannot create a host file"))?;
        // SAFETY: SYS_WRITE reads `bytes.len()` bytes from `bytes`, which outlives the call.
        let unwritten = unsafe { syscall!(WRITE, handle, bytes.as_ptr(), bytes.len()) };
        close(handle);
        if unwritten != 0 {
            return Err(Failure::Host("short write to a host file"));
        }
        // SAFETY: SYS_RENAME reads two NUL-terminated strings, of the lengths given, which outlive the call.
        let failed = unsafe {
            syscall!(
                RENAME,
                part.as_ptr(),
                part.count_bytes(),
                name.as_ptr(),
                name.count_bytes()
            )
        };
        if failed != 0 {
            return Err(Failure::Host("cannot rename a host file"));
        }
        Ok(())
    }

    /// Centiseconds since the firmware started, by the host's clock.
    fn clock() -> usize {
        // SAFETY: SYS_CLOCK takes no argument and touches no memory.
        unsafe { syscall!(CLOCK) }
    }

    /// Waits for the host to create `name`, reads it whole into `buf` and returns its length. Gives up after
    /// `timeout_cs` centiseconds.
    pub fn take(name: &CStr, buf: &mut [u8], timeout_cs: usize) -> Result<usize, Failure> {
        let start = clock();
        let handle = loop {
            if let Some(h) = open(name, nr::open::R_BINARY) {
                break h;
            }
            if clock().wrapping_sub(start) > timeout_cs {
                return Err(Failure::Host("the host did not answer in time"));
            }
            // Every call above is a trap into QEMU: poll, but not in a tight loop.
            cortex_m::asm::delay(200_000);
        };
        // SAFETY: SYS_FLEN takes a handle SYS_OPEN returned.
        let len = unsafe { syscall!(FLEN, handle) };
        let result = match buf.get_mut(..len) {
            Some(dest) if len as isize >= 0 => {
                // SAFETY: SYS_READ writes at most `dest.len()` bytes into `dest`, which outlives the call.
                let unread = unsafe { syscall!(READ, handle, dest.as_mut_ptr(), dest.len()) };
                if unread == 0 {
                    Ok(len)
                } else {
                    Err(Failure::Host("short read of a host file"))
                }
            }
            _ => Err(Failure::Host("a host file is larger than any message")),
        };
        close(handle);
        result
    }
}

unsafe extern "C" {
    // From cortex-m-rt's link.x: the stack runs down from `_stack_start` (the top of RAM) towards `_stack_end`
    // (the end of .bss and .uninit). With the `paint-stack` feature, reset fills that span with
    // `STACK_PAINT_VALUE` before `main`.
    static _stack_start: u32;
    static _stack_end: u32;
}

/// The most stack used since reset, in bytes: the distance from the top of the stack to the deepest word whose
/// paint was overwritten. (A frame that reserved stack and never wrote part of it is missed; a word that happened
/// to be written with the paint value too. Both are within a few words.)
pub fn stack_peak() -> usize {
    let top = (&raw const _stack_start) as usize;
    let mut at = (&raw const _stack_end) as usize;
    while at < top {
        // SAFETY: `[_stack_end, _stack_start)` is RAM the linker script reserved for the stack, word aligned;
        // reading a word of it, even one the stack has not reached, is defined (it holds the paint).
        let word = unsafe { core::ptr::read_volatile(at as *const u32) };
        if word != cortex_m_rt::STACK_PAINT_VALUE {
            break;
        }
        at += 4;
    }
    top - at
}
