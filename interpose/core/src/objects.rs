//! Which loaded objects count as "the system" when attributing a write.
//!
//! A write's component is the innermost caller that is the user's code: not
//! the C library, the loader, the C++/GCC runtimes, the Python runtime or
//! mpaudit. Classification is by file name, so it works for any install
//! prefix and any library version suffix.

use crate::path::file_name;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum ObjectClass {
    /// mpaudit itself: never shown in a stack.
    Mpaudit = 0,
    /// The C library and the dynamic loader.
    Libc = 1,
    /// Language runtimes: libstdc++, libgcc_s, libpython, the python executable.
    Runtime = 2,
    /// Everything else: the user's code.
    User = 3,
}

impl ObjectClass {
    pub fn from_u8(v: u8) -> ObjectClass {
        match v {
            0 => ObjectClass::Mpaudit,
            1 => ObjectClass::Libc,
            2 => ObjectClass::Runtime,
            _ => ObjectClass::User,
        }
    }
}

pub fn classify_object(path: &[u8]) -> ObjectClass {
    let name = file_name(path);
    let starts = |p: &[u8]| name.starts_with(p);
    if starts(b"libmpaudit.so") {
        ObjectClass::Mpaudit
    } else if starts(b"libc.so")
        || starts(b"libc-")
        || starts(b"ld-linux")
        || starts(b"ld64.so")
        || starts(b"libpthread.so")
        || starts(b"libdl.so")
        || starts(b"librt.so")
    {
        ObjectClass::Libc
    } else if starts(b"libstdc++.so")
        || starts(b"libgcc_s.so")
        || starts(b"libpython")
        || is_python_executable(name)
    {
        ObjectClass::Runtime
    } else {
        ObjectClass::User
    }
}

/// `python`, `python3`, `python3.11`, `python3.11d`: not `python-job.sh`.
fn is_python_executable(name: &[u8]) -> bool {
    match name.strip_prefix(b"python") {
        Some(rest) => rest
            .iter()
            .all(|&b| b.is_ascii_digit() || b == b'.' || b == b'd' || b == b'm'),
        None => false,
    }
}

/// Picks the component among frames (innermost first): the first user frame,
/// else the first runtime frame (a Python script's `open()` is attributed to
/// the interpreter), else none.
pub fn pick_component<T>(frames: &[T], class_of: impl Fn(&T) -> ObjectClass) -> Option<usize> {
    frames
        .iter()
        .position(|f| class_of(f) == ObjectClass::User)
        .or_else(|| {
            frames
                .iter()
                .position(|f| class_of(f) == ObjectClass::Runtime)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_system_objects_by_name() {
        use ObjectClass::*;
        for (p, c) in [
            ("/lib/x86_64-linux-gnu/libc.so.6", Libc),
            ("/lib64/ld-linux-x86-64.so.2", Libc),
            ("/usr/lib/x86_64-linux-gnu/libstdc++.so.6", Runtime),
            ("/lib/x86_64-linux-gnu/libgcc_s.so.1", Runtime),
            ("/usr/lib/libpython3.11.so.1.0", Runtime),
            ("/root/.pyenv/versions/3.11.7/bin/python3.11", Runtime),
            ("/target/debug/libmpaudit.so", Mpaudit),
            ("/job/lib/libLegacyAlg.so", User),
            ("/job/bin/python-job", User),
            ("/usr/bin/sed", User),
        ] {
            assert_eq!(classify_object(p.as_bytes()), c, "{p}");
        }
    }

    #[test]
    fn component_prefers_user_code_then_runtime() {
        use ObjectClass::*;
        assert_eq!(
            pick_component(&[Libc, Runtime, User, User], |c| *c),
            Some(2)
        );
        assert_eq!(pick_component(&[Libc, Runtime, Runtime], |c| *c), Some(1));
        assert_eq!(pick_component(&[Libc], |c| *c), None);
    }
}
