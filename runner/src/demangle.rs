//! A small Itanium C++ ABI demangler for the names the report shows: nested
//! names, constructors and destructors, common operators, std:: abbreviations,
//! substitutions, simple template arguments and builtin/pointer/reference
//! parameter types. Anything it does not understand yields `None`, and the
//! report then shows the mangled name: never a wrong one.
//!
//! Why not `cpp_demangle`: it is well kept, but it would be a new dependency
//! (and a Cargo.lock change in a lock file other engineers edit at the same
//! time) for the one line per rogue component that the report shows; the
//! mangled name is always kept next to the demangled one.

pub fn demangle(sym: &str) -> Option<String> {
    let sym = sym.split('.').next()?; // clone suffixes: .cold, .isra.0
    let body = sym.strip_prefix("_Z")?;
    let mut p = Parser {
        s: body.as_bytes(),
        i: 0,
        subs: Vec::new(),
        last_name: String::new(),
    };
    let (name, cv) = p.name()?;
    if p.i == p.s.len() {
        return Some(name);
    }
    // Template functions encode their return type first; we show it not.
    let is_template = name.ends_with('>');
    if is_template {
        p.ty()?;
    }
    let mut params = Vec::new();
    while p.i < p.s.len() {
        params.push(p.ty()?);
    }
    let params = if params == ["void"] {
        String::new()
    } else {
        params.join(", ")
    };
    Some(format!("{name}({params}){cv}"))
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    subs: Vec<String>,
    last_name: String,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn number(&mut self) -> Option<usize> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()?
            .parse()
            .ok()
    }
    fn source_name(&mut self) -> Option<String> {
        let n = self.number()?;
        let end = self.i.checked_add(n).filter(|&e| e <= self.s.len())?;
        let id = std::str::from_utf8(&self.s[self.i..end]).ok()?.to_string();
        self.i = end;
        Some(if id.starts_with("_GLOBAL__N") {
            "(anonymous namespace)".into()
        } else {
            id
        })
    }

    /// Returns the name and trailing cv-qualifiers of a member function.
    fn name(&mut self) -> Option<(String, String)> {
        if self.eat(b'N') {
            let mut cv = String::new();
            loop {
                match self.peek()? {
                    b'K' => cv.push_str(" const"),
                    b'V' => cv.push_str(" volatile"),
                    b'r' => {}
                    _ => break,
                }
                self.i += 1;
            }
            let mut parts: Vec<String> = Vec::new();
            while !self.eat(b'E') {
                let comp = self.component(&parts)?;
                if comp.starts_with('<') {
                    let last = parts.last_mut()?;
                    last.push_str(&comp);
                } else {
                    parts.push(comp);
                }
                let full = parts.join("::");
                if self.peek() != Some(b'E') {
                    self.subs.push(full);
                }
            }
            return Some((parts.join("::"), cv));
        }
        let mut name = if self.eat(b'S') && self.eat(b't') {
            let n = self.unqualified()?;
            format!("std::{n}")
        } else {
            if self.s.get(self.i.wrapping_sub(1)) == Some(&b'S') && self.i > 0 {
                self.i -= 1;
            }
            self.unqualified()?
        };
        if self.peek() == Some(b'I') {
            self.subs.push(name.clone());
            name.push_str(&self.template_args()?);
        }
        Some((name, String::new()))
    }

    fn component(&mut self, parts: &[String]) -> Option<String> {
        match self.peek()? {
            b'S' => {
                let s = self.substitution()?;
                self.last_name = s.rsplit("::").next().unwrap_or(&s).to_string();
                Some(s)
            }
            b'I' => self.template_args(),
            b'C' => {
                self.i += 1;
                if !matches!(self.peek()?, b'1'..=b'5') {
                    return None;
                }
                self.i += 1;
                let _ = parts;
                Some(strip_template(&self.last_name))
            }
            b'D' if matches!(self.s.get(self.i + 1), Some(b'0'..=b'5')) => {
                self.i += 2;
                Some(format!("~{}", strip_template(&self.last_name)))
            }
            _ => self.unqualified(),
        }
    }

    fn unqualified(&mut self) -> Option<String> {
        let c = self.peek()?;
        if c.is_ascii_digit() {
            let n = self.source_name()?;
            self.last_name = n.clone();
            return Some(n);
        }
        let op = self.s.get(self.i..self.i + 2)?;
        let name = match op {
            b"nw" => "new",
            b"na" => "new[]",
            b"dl" => "delete",
            b"da" => "delete[]",
            b"pl" => "+",
            b"mi" => "-",
            b"ml" => "*",
            b"dv" => "/",
            b"aS" => "=",
            b"eq" => "==",
            b"ne" => "!=",
            b"lt" => "<",
            b"gt" => ">",
            b"ls" => "<<",
            b"rs" => ">>",
            b"cl" => "()",
            b"ix" => "[]",
            b"pL" => "+=",
            b"pp" => "++",
            b"bo" => "bool", // not an operator code; guarded below
            _ => return None,
        };
        if op == b"bo" {
            return None;
        }
        self.i += 2;
        Some(format!("operator{name}"))
    }

    fn substitution(&mut self) -> Option<String> {
        if !self.eat(b'S') {
            return None;
        }
        let c = self.peek()?;
        let fixed = match c {
            b't' => {
                self.i += 1;
                let n = self.unqualified()?;
                return Some(format!("std::{n}"));
            }
            b'a' => "std::allocator",
            b'b' => "std::basic_string",
            b's' => "std::string",
            b'i' => "std::istream",
            b'o' => "std::ostream",
            b'd' => "std::iostream",
            _ => "",
        };
        if !fixed.is_empty() {
            self.i += 1;
            return Some(fixed.to_string());
        }
        // S_ is 0, S0_ is 1, S1_ is 2, … (base 36)
        let mut idx = 0usize;
        if !self.eat(b'_') {
            let mut n = 0usize;
            while let Some(c) = self.peek() {
                self.i += 1;
                if c == b'_' {
                    break;
                }
                let d = match c {
                    b'0'..=b'9' => c - b'0',
                    b'A'..=b'Z' => c - b'A' + 10,
                    _ => return None,
                };
                n = n.checked_mul(36)?.checked_add(d as usize)?;
            }
            idx = n + 1;
        }
        self.subs.get(idx).cloned()
    }

    fn template_args(&mut self) -> Option<String> {
        if !self.eat(b'I') {
            return None;
        }
        let mut args = Vec::new();
        while !self.eat(b'E') {
            if self.eat(b'L') {
                // literal: L <type> <value> E
                let t = self.ty()?;
                let neg = self.eat(b'n');
                let v = self.number()?;
                if !self.eat(b'E') {
                    return None;
                }
                args.push(match t.as_str() {
                    "bool" => (if v == 0 { "false" } else { "true" }).to_string(),
                    _ => format!("{}{v}", if neg { "-" } else { "" }),
                });
            } else {
                args.push(self.ty()?);
            }
        }
        let joined = args.join(", ");
        Some(if joined.ends_with('>') {
            format!("<{joined} >")
        } else {
            format!("<{joined}>")
        })
    }

    fn ty(&mut self) -> Option<String> {
        let c = self.peek()?;
        let builtin = match c {
            b'v' => "void",
            b'b' => "bool",
            b'c' => "char",
            b'a' => "signed char",
            b'h' => "unsigned char",
            b's' => "short",
            b't' => "unsigned short",
            b'i' => "int",
            b'j' => "unsigned int",
            b'l' => "long",
            b'm' => "unsigned long",
            b'x' => "long long",
            b'y' => "unsigned long long",
            b'f' => "float",
            b'd' => "double",
            b'e' => "long double",
            b'w' => "wchar_t",
            b'z' => "...",
            _ => "",
        };
        if !builtin.is_empty() {
            self.i += 1;
            return Some(builtin.to_string());
        }
        let t = match c {
            b'P' | b'R' | b'O' => {
                self.i += 1;
                let inner = self.ty()?;
                let sigil = match c {
                    b'P' => "*",
                    b'R' => "&",
                    _ => "&&",
                };
                format!("{inner}{sigil}")
            }
            b'K' => {
                self.i += 1;
                let inner = self.ty()?;
                format!("{inner} const")
            }
            b'S' => {
                let s = self.substitution()?;
                if self.peek() == Some(b'I') {
                    let args = self.template_args()?;
                    format!("{s}{args}")
                } else {
                    return Some(s);
                }
            }
            b'N' => self.name()?.0,
            b'0'..=b'9' => {
                let mut n = self.source_name()?;
                if self.peek() == Some(b'I') {
                    self.subs.push(n.clone());
                    n.push_str(&self.template_args()?);
                }
                n
            }
            _ => return None,
        };
        self.subs.push(t.clone());
        Some(t)
    }
}

fn strip_template(n: &str) -> String {
    n.split('<').next().unwrap_or(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn common_names() {
        let cases = [
            ("_ZN9LegacyAlg7executeEv", "LegacyAlg::execute()"),
            ("_ZN9LegacyAlg7executeEv.cold", "LegacyAlg::execute()"),
            ("_Z3fooi", "foo(int)"),
            ("_Z3fooPKcRi", "foo(char const*, int&)"),
            ("_ZN2ns3Bar3bazEv", "ns::Bar::baz()"),
            ("_ZNK2ns3Bar4sizeEv", "ns::Bar::size() const"),
            ("_ZN7HistSvcC2Ev", "HistSvc::HistSvc()"),
            ("_ZN7HistSvcD1Ev", "HistSvc::~HistSvc()"),
            ("_ZN5Alloc4copyERKS_", "Alloc::copy(Alloc const&)"),
            (
                "_ZNSt6vectorIiSaIiEE9push_backERKi",
                "std::vector<int, std::allocator<int> >::push_back(int const&)",
            ),
            (
                "_ZN6Writer5writeERKSsm",
                "Writer::write(std::string const&, unsigned long)",
            ),
            ("_ZN3Foo4openEPKcS1_", "Foo::open(char const*, char const*)"),
            ("_ZN3FooclEv", "Foo::operator()()"),
            ("_ZlsRSoRK3Foo", "operator<<(std::ostream&, Foo const&)"),
            (
                "_ZN12_GLOBAL__N_16helperEv",
                "(anonymous namespace)::helper()",
            ),
            ("_ZN3FooC1ERKS_", "Foo::Foo(Foo const&)"),
            ("_Z4mainv", "main()"),
        ];
        for (m, d) in cases {
            assert_eq!(demangle(m).as_deref(), Some(d), "{m}");
        }
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert_eq!(demangle("main"), None);
        assert_eq!(demangle("_ZN3Foo"), None);
        assert_eq!(demangle("_Z999x"), None);
        assert_eq!(demangle("_ZN3FooUt_Ev"), None);
    }
}
