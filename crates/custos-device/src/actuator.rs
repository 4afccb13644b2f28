//! What a device switches: a relay, a program, a GPIO line — behind one small trait — and the state it keeps
//! across reboots.
//!
//! The agent restores the last state at start ([`CurrentState::load`], then [`Actuator::apply`]), so a heater
//! that was on before a power cut is on again after it. A state is a short UTF-8 text (at most
//! [`MAX_STATE`] bytes): `on`, `off`, or a value such as `21.5`; each actuator says which it takes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::state::{StateError, write_atomic};

/// The longest state, bytes (as the command format allows: docs/wire.md §11).
pub const MAX_STATE: usize = 64;
/// The file in the state directory that holds the actuator's state.
pub const STATE_FILE: &str = "current.state";

/// Why an actuator did not take a state.
#[derive(Debug, thiserror::Error)]
pub enum ActuatorError {
    /// The state is not one this actuator takes (answered BAD_VALUE).
    #[error("`{0}` is not a state this actuator takes")]
    BadValue(String),
    /// The actuator failed (answered FAILED); the state is unchanged.
    #[error("the actuator failed: {0}")]
    Failed(String),
}

/// Something a device drives.
pub trait Actuator: Send {
    /// Drives the actuator to `state`. On error the actuator is where it was.
    fn apply(&mut self, state: &str) -> Result<(), ActuatorError>;
    /// What it is, for logs.
    fn describe(&self) -> String;
}

/// `on` or `off` (also `1`/`0`, `true`/`false`), case-insensitively, for actuators that only switch.
pub fn parse_switch(state: &str) -> Result<bool, ActuatorError> {
    match state.trim().to_ascii_lowercase().as_str() {
        "on" | "1" | "true" => Ok(true),
        "off" | "0" | "false" => Ok(false),
        _ => Err(ActuatorError::BadValue(state.into())),
    }
}

/// A relay that exists only in the agent's memory and log: the default, and what the demo and tests switch.
#[derive(Debug, Default)]
pub struct SimulatedRelay {
    on: bool,
}

impl SimulatedRelay {
    /// Whether the relay is closed.
    pub fn is_on(&self) -> bool {
        self.on
    }
}

impl Actuator for SimulatedRelay {
    fn apply(&mut self, state: &str) -> Result<(), ActuatorError> {
        self.on = parse_switch(state)?;
        tracing::info!(on = self.on, "simulated relay switched");
        Ok(())
    }
    fn describe(&self) -> String {
        "simulated relay".into()
    }
}

/// Runs a program with the new state as its one argument; exit status 0 means done, anything else FAILED.
/// The program is run directly (no shell), so a state cannot inject a command.
pub struct ProgramActuator {
    program: PathBuf,
}

impl ProgramActuator {
    /// An actuator that runs `program STATE`.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }
}

impl Actuator for ProgramActuator {
    fn apply(&mut self, state: &str) -> Result<(), ActuatorError> {
        let out = Command::new(&self.program)
            .arg(state)
            .output()
            .map_err(|e| ActuatorError::Failed(format!("{}: {e}", self.program.display())))?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(ActuatorError::Failed(format!(
                "{} {state:?} exited with {}: {}",
                self.program.display(),
                out.status,
                err.trim().chars().take(200).collect::<String>()
            )))
        }
    }
    fn describe(&self) -> String {
        format!("program {}", self.program.display())
    }
}

/// One output line of a Linux GPIO character device (`/dev/gpiochipN`), driven active for `on` and inactive
/// for `off`. The line is requested at each change and released after it, so another process (or a restart)
/// can take it; the kernel keeps the value the line was last driven to only while it is requested, which is
/// why the agent restores the state from [`STATE_FILE`] at start rather than reading it back.
#[derive(Debug)]
pub struct GpioLine {
    chip: PathBuf,
    line: u32,
    #[cfg(target_os = "linux")]
    held: Option<gpiocdev::Request>,
}

impl GpioLine {
    /// Line `line` of chip `chip` (e.g. `/dev/gpiochip0`).
    pub fn new(chip: impl Into<PathBuf>, line: u32) -> Self {
        Self {
            chip: chip.into(),
            line,
            #[cfg(target_os = "linux")]
            held: None,
        }
    }

    /// Parses `CHIP:LINE` (e.g. `/dev/gpiochip0:17` or `gpiochip0:17`).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (chip, line) = spec
            .rsplit_once(':')
            .ok_or_else(|| format!("`{spec}` is not CHIP:LINE (e.g. /dev/gpiochip0:17)"))?;
        let line: u32 = line
            .parse()
            .map_err(|_| format!("`{line}` is not a GPIO line number"))?;
        let chip = if chip.contains('/') {
            PathBuf::from(chip)
        } else {
            Path::new("/dev").join(chip)
        };
        Ok(Self::new(chip, line))
    }
}

impl Actuator for GpioLine {
    fn apply(&mut self, state: &str) -> Result<(), ActuatorError> {
        let on = parse_switch(state)?;
        #[cfg(target_os = "linux")]
        {
            use gpiocdev::line::Value;
            let value = if on { Value::Active } else { Value::Inactive };
            // Keep the line requested while the agent runs: a released line may fall back to its default.
            if let Some(req) = &self.held {
                return req
                    .set_lone_value(value)
                    .map_err(|e| ActuatorError::Failed(format!("{}: {e}", self.describe())));
            }
            let req = gpiocdev::Request::builder()
                .on_chip(&self.chip)
                .with_consumer("custos")
                .with_line(self.line)
                .as_output(value)
                .request()
                .map_err(|e| ActuatorError::Failed(format!("{}: {e}", self.describe())))?;
            self.held = Some(req);
            Ok(())
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = on;
            Err(ActuatorError::Failed(
                "GPIO lines are supported on Linux only".into(),
            ))
        }
    }
    fn describe(&self) -> String {
        format!("GPIO {} line {}", self.chip.display(), self.line)
    }
}

/// The actuator's state as the device last applied it, in [`STATE_FILE`] (the seed's `current.state`).
#[derive(Clone, PartialEq, Eq)]
pub struct CurrentState(String);

impl fmt::Debug for CurrentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl CurrentState {
    /// A state, checked for length and content (printable UTF-8, no control characters).
    pub fn new(state: &str) -> Result<Self, ActuatorError> {
        if state.is_empty() || state.len() > MAX_STATE || state.chars().any(char::is_control) {
            return Err(ActuatorError::BadValue(state.chars().take(80).collect()));
        }
        Ok(Self(state.into()))
    }

    /// The state text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The state saved in `dir`, if any. A file that is not a valid state is an error, not a silent default:
    /// the agent must not switch a door to a guessed state.
    pub fn load(dir: &Path) -> Result<Option<Self>, StateError> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let bad = |why: &str| StateError::Invalid {
                    path: path.clone(),
                    why: why.into(),
                };
                let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
                Self::new(text.trim_end_matches('\n'))
                    .map(Some)
                    .map_err(|e| bad(&e.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::Io { path, source: e }),
        }
    }

    /// Writes the state to `dir` atomically (a crash leaves the old or the new state, never a mix).
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        write_atomic(&dir.join(STATE_FILE), format!("{}\n", self.0).as_bytes())
    }
}

/// Which actuator `custos device run --actuator` names: `relay` (simulated, the default), `command:PROGRAM`,
/// or `gpio:CHIP:LINE`.
pub fn from_spec(spec: &str) -> Result<Box<dyn Actuator>, String> {
    if spec == "relay" {
        Ok(Box::<SimulatedRelay>::default())
    } else if let Some(program) = spec.strip_prefix("command:") {
        if program.is_empty() {
            return Err("command: needs a program, e.g. command:/usr/local/bin/switch".into());
        }
        Ok(Box::new(ProgramActuator::new(program)))
    } else if let Some(line) = spec.strip_prefix("gpio:") {
        Ok(Box::new(GpioLine::parse(line)?))
    } else {
        Err(format!(
            "unknown actuator `{spec}`: use relay, command:PROGRAM or gpio:CHIP:LINE"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_parse_and_junk_is_refused() {
        assert!(parse_switch("ON").unwrap());
        assert!(!parse_switch("0").unwrap());
        assert!(matches!(
            parse_switch("maybe"),
            Err(ActuatorError::BadValue(_))
        ));
        let mut relay = SimulatedRelay::default();
        relay.apply("on").unwrap();
        assert!(relay.is_on());
        assert!(relay.apply("21.5").is_err());
        assert!(relay.is_on(), "a refused state leaves the relay as it was");
    }

    #[test]
    fn the_state_survives_a_restart_and_a_bad_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(CurrentState::load(dir.path()).unwrap(), None);
        CurrentState::new("on").unwrap().save(dir.path()).unwrap();
        assert_eq!(
            CurrentState::load(dir.path()).unwrap().unwrap().as_str(),
            "on"
        );
        std::fs::write(dir.path().join(STATE_FILE), [0xff, 0xfe]).unwrap();
        assert!(CurrentState::load(dir.path()).is_err());
        std::fs::write(dir.path().join(STATE_FILE), "a\u{7}b").unwrap();
        assert!(CurrentState::load(dir.path()).is_err());
        assert!(CurrentState::new(&"x".repeat(MAX_STATE + 1)).is_err());
        assert!(CurrentState::new("").is_err());
    }

    #[test]
    fn a_program_gets_the_state_as_one_argument_and_its_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = dir.path().join("switch.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$1\" = fail ] && {{ echo broken >&2; exit 3; }}\nprintf '%s' \"$1\" > {}\n",
                out.display()
            ),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut a = from_spec(&format!("command:{}", script.display())).unwrap();
        a.apply("on; rm -rf /").unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "on; rm -rf /");
        match a.apply("fail") {
            Err(ActuatorError::Failed(m)) => assert!(m.contains("broken"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ProgramActuator::new(dir.path().join("missing")).apply("on"),
            Err(ActuatorError::Failed(_))
        ));
    }

    #[test]
    fn gpio_specs_parse_and_a_missing_chip_fails_cleanly() {
        let g = GpioLine::parse("gpiochip7:17").unwrap();
        assert_eq!(g.chip, PathBuf::from("/dev/gpiochip7"));
        assert_eq!(g.line, 17);
        assert!(GpioLine::parse("gpiochip0").is_err());
        assert!(GpioLine::parse("gpiochip0:x").is_err());
        let dir = tempfile::tempdir().unwrap();
        let mut g = GpioLine::new(dir.path().join("gpiochip-none"), 3);
        assert!(matches!(g.apply("on"), Err(ActuatorError::Failed(_))));
        assert!(matches!(g.apply("dim"), Err(ActuatorError::BadValue(_))));
        assert!(from_spec("servo").is_err());
        assert!(from_spec("command:").is_err());
    }
}
