//! A resource check of a pickle stream before candle's unpickler sees it.
//!
//! candle's unpickler ([`candle::pickle::Stack`]) builds every object in memory and drops it
//! recursively, so a small crafted stream can exhaust the stack (200,000 nested lists) or the
//! memory (a list memoised and fetched again doubles with every two opcodes). This scan runs the
//! same opcodes over a shadow stack that holds only each object's nesting depth and node count,
//! and refuses a stream whose objects would be nested deeper than [`MAX_DEPTH`] or whose
//! unpickling would create more than [`MAX_NODES`] objects (copies included). Opcodes candle does
//! not know are refused here too, with the byte offset.

/// Deepest object nesting accepted. A PyTorch state dict nests about 8 levels (dict, tensor
/// reduction, argument tuple, storage reference, ...); a training checkpoint a few more.
pub(crate) const MAX_DEPTH: u32 = 100;

/// Most objects the unpickler may create, copies made by the memo included. A state dict needs
/// about 20 per tensor; a million is far above any checkpoint and a few tens of MB of memory.
pub(crate) const MAX_NODES: u64 = 1 << 20;

/// One shadow stack entry: what the real object would be, in size only.
#[derive(Clone, Copy)]
struct Shadow {
    depth: u32,
    nodes: u64,
    mark: bool,
}

const LEAF: Shadow = Shadow { depth: 1, nodes: 1, mark: false };

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Shadow>,
    memo: std::collections::HashMap<u32, Shadow>,
    created: u64,
}

impl Scanner<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            format!(
                "pickle truncated at byte {}: {what} needs {n} more bytes, {} left",
                self.pos,
                self.bytes.len() - self.pos
            )
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32_le(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) {
        let rest = &self.bytes[self.pos..];
        self.pos += rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
    }

    fn count(&mut self, nodes: u64) -> Result<(), String> {
        self.created = self.created.saturating_add(nodes);
        if self.created > MAX_NODES {
            return Err(format!(
                "pickle would create more than {MAX_NODES} objects (stopped at byte {}); not a checkpoint this tool reads",
                self.pos
            ));
        }
        Ok(())
    }

    fn push(&mut self, s: Shadow) -> Result<(), String> {
        if s.depth > MAX_DEPTH {
            return Err(format!(
                "pickle nests objects more than {MAX_DEPTH} levels deep (at byte {}); not a checkpoint this tool reads",
                self.pos
            ));
        }
        self.stack.push(s);
        Ok(())
    }

    fn pop(&mut self) -> Result<Shadow, String> {
        self.stack.pop().ok_or_else(|| format!("pickle pops an empty stack at byte {}", self.pos))
    }

    fn pop_to_mark(&mut self) -> Result<Vec<Shadow>, String> {
        let at = self
            .stack
            .iter()
            .rposition(|s| s.mark)
            .ok_or_else(|| format!("pickle has no mark to pop to at byte {}", self.pos))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    /// A new container holding `items` (moved, not copied: one new node).
    fn container(&mut self, items: &[Shadow]) -> Result<(), String> {
        self.count(1)?;
        let depth = 1 + items.iter().map(|s| s.depth).max().unwrap_or(0);
        let nodes = items.iter().fold(1u64, |a, s| a.saturating_add(s.nodes));
        self.push(Shadow { depth, nodes, mark: false })
    }

    /// Items added in place to the object on top of the stack (a list or dict).
    fn extend_top(&mut self, items: &[Shadow]) -> Result<(), String> {
        let pos = self.pos;
        let top = self.stack.last_mut().ok_or_else(|| format!("pickle adds to an empty stack at byte {pos}"))?;
        for s in items {
            top.depth = top.depth.max(s.depth + 1);
            top.nodes = top.nodes.saturating_add(s.nodes);
        }
        if top.depth > MAX_DEPTH {
            return Err(format!("pickle nests objects more than {MAX_DEPTH} levels deep (at byte {pos})"));
        }
        Ok(())
    }

    fn leaf(&mut self) -> Result<(), String> {
        self.count(1)?;
        self.push(LEAF)
    }

    fn memo_get(&mut self, id: u32) -> Result<(), String> {
        let s = *self.memo.get(&id).ok_or_else(|| format!("pickle reads memo entry {id} before writing it"))?;
        self.count(s.nodes)?;
        self.push(s)
    }

    fn memo_put(&mut self, id: u32) -> Result<(), String> {
        let s =
            *self.stack.last().ok_or_else(|| format!("pickle memoises from an empty stack at byte {}", self.pos))?;
        self.count(s.nodes)?;
        self.memo.insert(id, s);
        Ok(())
    }

    /// One opcode; `Ok(true)` at STOP. Mirrors the opcode set of candle's unpickler.
    fn step(&mut self) -> Result<bool, String> {
        let at = self.pos;
        let op = self.take(1, "an opcode")?[0];
        match op {
            0x80 => {
                self.take(1, "PROTO")?;
            }
            b'c' => {
                self.line();
                self.line();
                self.leaf()?;
            }
            b'K' => {
                self.take(1, "BININT1")?;
                self.leaf()?;
            }
            b'M' => {
                self.take(2, "BININT2")?;
                self.leaf()?;
            }
            b'J' => {
                self.take(4, "BININT")?;
                self.leaf()?;
            }
            b'G' => {
                self.take(8, "BINFLOAT")?;
                self.leaf()?;
            }
            0x8a => {
                let n = self.take(1, "LONG1")?[0];
                if n > 8 {
                    return Err(format!("pickle integer at byte {at} has {n} bytes; at most 8 are supported"));
                }
                self.take(usize::from(n), "LONG1")?;
                self.leaf()?;
            }
            b'X' => {
                let len = self.u32_le("BINUNICODE")? as usize;
                self.take(len, "BINUNICODE")?;
                self.leaf()?;
            }
            // NONE, NEWTRUE, NEWFALSE, EMPTY_DICT, DICT (read as an empty dict, as candle does),
            // EMPTY_TUPLE, EMPTY_LIST.
            b'N' | 0x88 | 0x89 | b'}' | b'd' | b')' | b']' => self.leaf()?,
            b'(' => {
                self.count(1)?;
                self.push(Shadow { mark: true, ..LEAF })?;
            }
            b'Q' => {
                let id = self.pop()?;
                self.container(&[id])?;
            }
            b't' => {
                let items = self.pop_to_mark()?;
                self.container(&items)?;
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                self.container(&items)?;
            }
            b'R' | b'b' | 0x81 => {
                let a = self.pop()?;
                let b = self.pop()?;
                self.container(&[a, b])?;
            }
            b'a' => {
                let v = self.pop()?;
                self.extend_top(&[v])?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.extend_top(&[k, v])?;
            }
            b'e' | b'u' => {
                let items = self.pop_to_mark()?;
                self.extend_top(&items)?;
            }
            b'h' => {
                let id = self.take(1, "BINGET")?[0];
                self.memo_get(u32::from(id))?;
            }
            b'j' => {
                let id = self.u32_le("LONG_BINGET")?;
                self.memo_get(id)?;
            }
            b'q' => {
                let id = self.take(1, "BINPUT")?[0];
                self.memo_put(u32::from(id))?;
            }
            b'r' => {
                let id = self.u32_le("LONG_BINPUT")?;
                self.memo_put(id)?;
            }
            b'.' => return Ok(true),
            other => return Err(format!("unsupported pickle opcode {other:#04x} at byte {at}")),
        }
        Ok(false)
    }
}

/// Checks that unpickling `bytes` stays within [`MAX_DEPTH`] and [`MAX_NODES`] and ends in STOP;
/// the error says what is wrong and where.
pub(crate) fn scan(bytes: &[u8]) -> Result<(), String> {
    let mut s = Scanner { bytes, pos: 0, stack: Vec::new(), memo: Default::default(), created: 0 };
    while !s.step()? {}
    Ok(())
}
