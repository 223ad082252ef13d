//! A minimal protobuf wire-format reader: varints, fixed 32/64-bit values and length-delimited
//! fields. Groups (wire types 3 and 4) are rejected; SentencePiece never writes them.

/// One field's value, as the wire format carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl Value<'_> {
    pub fn wire_name(&self) -> &'static str {
        match self {
            Value::Varint(_) => "varint",
            Value::Fixed64(_) => "64-bit",
            Value::Bytes(_) => "length-delimited",
            Value::Fixed32(_) => "32-bit",
        }
    }
}

/// A reader over one message's bytes. Errors are plain strings (with the byte offset); the
/// caller adds the file name.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` in the whole file, for error messages.
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            base: 0,
        }
    }

    /// A reader over a nested message that starts at `base` in the file.
    pub fn nested(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    /// File offset of the next byte.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub fn read_varint(&mut self) -> Result<u64, String> {
        let start = self.offset();
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(format!("truncated varint at byte {start}"));
            };
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err(format!("varint at byte {start} overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("varint at byte {start} is longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let start = self.offset();
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "field at byte {start} needs {n} bytes but only {} remain (truncated file?)",
                    self.buf.len() - self.pos
                )
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next field: `(field number, value, file offset of the value)`, or `None` at
    /// the end of the message.
    #[allow(clippy::type_complexity)]
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>, usize)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let tag_at = self.offset();
        let tag = self.read_varint()?;
        let field = tag >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(format!("invalid field number {field} at byte {tag_at}"));
        }
        let field = field as u32;
        let at = self.offset();
        let value = match tag & 7 {
            0 => Value::Varint(self.read_varint()?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let len = self.read_varint()?;
                let len = usize::try_from(len)
                    .map_err(|_| format!("length {len} at byte {at} is too large"))?;
                let at = self.offset();
                return Ok(Some((field, Value::Bytes(self.take(len)?), at)));
            }
            5 => {
                let b = self.take(4)?;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                Value::Fixed32(u32::from_le_bytes(a))
            }
            3 | 4 => {
                return Err(format!(
                    "protobuf groups are not supported (field {field} at byte {tag_at})"
                ))
            }
            w => return Err(format!("invalid wire type {w} at byte {tag_at}")),
        };
        Ok(Some((field, value, at)))
    }
}

/// An `int32` field: protobuf writes negative values as 10-byte two's complement varints.
pub fn as_i32(v: u64) -> i32 {
    v as i64 as i32
}
