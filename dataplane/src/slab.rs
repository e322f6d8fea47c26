//! [`Slab`]: the storage of both cores' flow tables. Values live in a
//! `Vec` and are addressed by `u32` slots, which the tables' indexes hold;
//! a removed value's slot goes on a free list and is the next one reused,
//! so the `Vec` never grows past the most values held at once.
//!
//! It knows nothing of keys or indexes: a table that removes a value
//! removes its index entries itself.
//!
//! Invariant: the free slots are exactly those listed in `free`, and
//! `live` is the number of the others; every slot is below `u32::MAX`
//! (so `slot + 1` fits in a `u32`).

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Slab<T> {
    /// The values; `None`: a free slot, listed in `free`.
    slots: Vec<Option<T>>,
    free: Vec<u32>,
    /// Slots in use.
    live: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Values held.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Slots allocated, free or not: the most values held at once.
    pub fn slots_allocated(&self) -> usize {
        self.slots.len()
    }

    #[inline(always)]
    pub fn get(&self, slot: u32) -> Option<&T> {
        self.slots.get(slot as usize)?.as_ref()
    }

    #[inline(always)]
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Stores `value` in the last freed slot, or a new one; `None` when
    /// every slot below `u32::MAX` is in use.
    pub fn insert(&mut self, value: T) -> Option<u32> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|s| *s < u32::MAX)?;
                self.slots.push(None);
                slot
            }
        };
        self.slots[slot as usize] = Some(value);
        self.live += 1;
        Some(slot)
    }

    /// Takes the value out of `slot`, which becomes free.
    pub fn remove(&mut self, slot: u32) -> Option<T> {
        let value = self.slots.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        self.live -= 1;
        Some(value)
    }

    /// Every value with its slot, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        // Slots are below u32::MAX (see insert).
        (0u32..)
            .zip(&self.slots)
            .filter_map(|(slot, v)| Some((slot, v.as_ref()?)))
    }

    /// The slots of the values `select` picks, in slot order.
    pub fn select(&self, mut select: impl FnMut(&T) -> bool) -> Vec<u32> {
        self.iter()
            .filter(|(_, v)| select(v))
            .map(|(slot, _)| slot)
            .collect()
    }

    /// Asserts the module invariant.
    #[cfg(test)]
    pub fn check_invariant(&self) {
        let live = self.slots.iter().filter(|v| v.is_some()).count();
        assert_eq!(live, self.live);
        assert_eq!(self.free.len() + self.live, self.slots.len());
        for slot in &self.free {
            assert!(self.slots[*slot as usize].is_none());
        }
        assert!(self.slots.len() <= u32::MAX as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_slots_are_reused_last_first() {
        let mut s = Slab::default();
        let a = s.insert('a').unwrap();
        let b = s.insert('b').unwrap();
        let c = s.insert('c').unwrap();
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(s.remove(b), Some('b'));
        assert_eq!(s.remove(b), None);
        assert_eq!(s.remove(a), Some('a'));
        s.check_invariant();
        assert_eq!(s.insert('d'), Some(a));
        assert_eq!(s.insert('e'), Some(b));
        assert_eq!(s.insert('f'), Some(3));
        assert_eq!(s.len(), 4);
        assert_eq!(s.slots_allocated(), 4);
        assert_eq!(s.select(|v| *v > 'c'), vec![0, 1, 3]);
        assert_eq!(s.get(2), Some(&'c'));
        *s.get_mut(2).unwrap() = 'z';
        assert_eq!(s.iter().map(|(_, v)| *v).collect::<String>(), "dezf");
        assert_eq!(s.get(9), None);
        s.check_invariant();
    }
}
