// A tiny command-line parser for `wv` (included by src/bin/wv.rs): `--name value`,
// `--name=value`, repeated flags, and boolean switches. Unknown flags are errors.

pub struct Args {
    pairs: Vec<(String, String)>,
}

impl Args {
    pub fn parse(argv: &[String], allowed: &[&str], switches: &[&str]) -> Result<Args, String> {
        let mut pairs = Vec::new();
        let mut i = 0;
        while i < argv.len() {
            let a = &argv[i];
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (name.to_string(), None),
            };
            if !allowed.contains(&name.as_str()) {
                return Err(format!("unknown flag --{name} for this command"));
            }
            if switches.contains(&name.as_str()) {
                pairs.push((name, inline.unwrap_or_else(|| "true".into())));
                i += 1;
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    argv.get(i).cloned().ok_or_else(|| format!("--{name} needs a value"))?
                }
            };
            pairs.push((name, value));
            i += 1;
        }
        Ok(Args { pairs })
    }
    pub fn get(&self, name: &str) -> Option<String> {
        self.pairs.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }
    pub fn all(&self, name: &str) -> Vec<String> {
        self.pairs.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect()
    }
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v != "false")
    }
    pub fn required(&self, name: &str) -> Result<String, String> {
        self.get(name).ok_or_else(|| format!("--{name} is required"))
    }
    pub fn value<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.parse::<T>().map(Some).map_err(|_| format!("--{name}: invalid value {v:?}")),
        }
    }
}
