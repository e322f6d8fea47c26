//! Plain counters of a core, declared once with [`counters!`].

/// Declares `pub struct Counters` with one `u64` per name, `iter()` (name
/// and value in declaration order), `Display` (one `name value` line per
/// counter), and, given the prefix of the drop counters, `drops_total()`
/// and `dropped_named(reason)` (the counter `prefix` + `reason`).
macro_rules! counters {
    (drops: $prefix:literal; $($(#[$m:meta])* $name:ident),* $(,)?) => {
        /// What the core did, as plain counters. `Display` renders one
        /// `name value` line per counter, in declaration order.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Counters {
            $($(#[$m])* pub $name: u64,)*
        }
        impl Counters {
            /// (name, value) of every counter, in declaration order.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$((stringify!($name), self.$name)),*].into_iter()
            }

            /// The drop counter named `reason` (after the prefix).
            fn dropped_named(&self, reason: &str) -> u64 {
                self.iter()
                    .find(|(n, _)| n.strip_prefix($prefix) == Some(reason))
                    .map_or(0, |(_, v)| v)
            }

            /// All drops, whatever the reason.
            pub fn drops_total(&self) -> u64 {
                self.iter()
                    .filter(|(n, _)| n.starts_with($prefix))
                    .map(|(_, v)| v)
                    .sum()
            }
        }
        impl std::fmt::Display for Counters {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                for (name, value) in self.iter() {
                    writeln!(f, "{name} {value}")?;
                }
                Ok(())
            }
        }
    };
}

pub(crate) use counters;
