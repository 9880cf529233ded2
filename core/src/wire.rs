//! Bounds-checked reading of untrusted bytes, shared by every binary format.

/// A cursor over untrusted bytes: every read checks its bounds and names the field it wanted.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// A read ran past the end while reading `field`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Truncated {
    pub field: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Truncated> {
        let end = self.pos.checked_add(n).ok_or(Truncated { field })?;
        let slice = self.bytes.get(self.pos..end).ok_or(Truncated { field })?;
        self.pos = end;
        Ok(slice)
    }

    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Truncated> {
        self.take(N, field)?.try_into().map_err(|_| Truncated { field })
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, Truncated> {
        Ok(u8::from_be_bytes(self.array(field)?))
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, Truncated> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, Truncated> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, Truncated> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
}
