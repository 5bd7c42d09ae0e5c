//! A restricted unpickler for `torch.save`'s `data.pkl`: the opcodes of protocol 2 (and the
//! few of 3-5 a newer pickler may add) and only the globals a tensor archive names — the
//! tensor rebuild functions, `OrderedDict`, storage types and dtypes. Nothing is ever called:
//! each allowed global is a tag this reader interprets itself, and any other global is
//! refused with its name, so a checkpoint cannot run code. Memory is bounded by the pickle's
//! size: every value costs at least one opcode byte, and copies are charged to a budget.

use std::collections::HashMap;
use std::rc::Rc;

/// What a storage persistent id names: `('storage', torch.BFloat16Storage, '0', 'cpu', numel)`.
#[derive(Debug)]
pub(crate) struct StorageRef {
    /// Stored dtype name (`BF16`); `U8` for an `UntypedStorage` (numel counts bytes).
    pub dtype: &'static str,
    pub key: String,
    pub numel: u64,
}

/// A tensor as `_rebuild_tensor_v2/v3` describe it: a strided view of a storage.
#[derive(Debug)]
pub(crate) struct TensorRef {
    pub storage: Rc<StorageRef>,
    pub dtype: &'static str,
    pub offset: u64,
    pub size: Vec<u64>,
    pub stride: Vec<u64>,
}

/// The globals a tensor archive may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Global {
    RebuildV2,
    RebuildV3,
    RebuildParameter,
    OrderedDict,
    /// `torch.BFloat16Storage` and the other typed storages.
    Storage(&'static str),
    /// `torch.bfloat16` and the other dtypes (`_rebuild_tensor_v3`'s last argument).
    Dtype(&'static str),
}

#[derive(Clone, Debug)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float,
    Str(Rc<str>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<Vec<Value>>),
    Dict(Rc<Vec<(Value, Value)>>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

const STORAGES: [(&str, &str); 10] = [
    ("FloatStorage", "F32"),
    ("BFloat16Storage", "BF16"),
    ("HalfStorage", "F16"),
    ("DoubleStorage", "F64"),
    ("LongStorage", "I64"),
    ("IntStorage", "I32"),
    ("ShortStorage", "I16"),
    ("CharStorage", "I8"),
    ("ByteStorage", "U8"),
    ("BoolStorage", "BOOL"),
];

const DTYPES: [(&str, &str); 12] = [
    ("float32", "F32"),
    ("bfloat16", "BF16"),
    ("float16", "F16"),
    ("float64", "F64"),
    ("int64", "I64"),
    ("int32", "I32"),
    ("int16", "I16"),
    ("int8", "I8"),
    ("uint8", "U8"),
    ("bool", "BOOL"),
    ("float8_e4m3fn", "F8_E4M3"),
    ("float8_e5m2", "F8_E5M2"),
];

/// The allowed global `module.name`, or the refusal naming it.
fn global(module: &str, name: &str) -> Result<Global, String> {
    let g = match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildV2),
        ("torch._utils", "_rebuild_tensor_v3") => Some(Global::RebuildV3),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch.storage", "UntypedStorage") | ("torch", "UntypedStorage") => {
            Some(Global::Storage("U8"))
        }
        ("torch", n) => STORAGES
            .iter()
            .find(|s| s.0 == n)
            .map(|s| Global::Storage(s.1))
            .or_else(|| DTYPES.iter().find(|d| d.0 == n).map(|d| Global::Dtype(d.1))),
        _ => None,
    };
    g.ok_or_else(|| {
        format!(
            "refused: the pickle names the global `{module}.{name}`, which is not part of a \
             PyTorch tensor archive (only torch's tensor rebuild functions, storage types, dtypes \
             and collections.OrderedDict are allowed; a checkpoint must not run code)"
        )
    })
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Elements that may still be copied (copy-on-write of shared containers).
    budget: usize,
}

fn int(v: &Value, what: &str) -> Result<u64, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as u64),
        Value::Bool(b) => Ok(*b as u64),
        other => Err(format!(
            "{what}: expected a non-negative int, got {other:?}"
        )),
    }
}

fn ints(v: &Value, what: &str) -> Result<Vec<u64>, String> {
    match v {
        Value::Tuple(t) | Value::List(t) => t.iter().map(|x| int(x, what)).collect(),
        other => Err(format!("{what}: expected a tuple of ints, got {other:?}")),
    }
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "pickle truncated: {n} bytes wanted at byte {} of {}",
                    self.pos,
                    self.data.len()
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("pickle truncated: GLOBAL without its newline")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "GLOBAL name is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }
    fn pop(&mut self) -> Result<Value, String> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(format!("pickle stack underflow at byte {}", self.pos));
        }
        self.stack
            .pop()
            .ok_or_else(|| format!("pickle stack underflow at byte {}", self.pos))
    }
    fn top(&mut self) -> Result<&mut Value, String> {
        let pos = self.pos;
        self.stack
            .last_mut()
            .ok_or_else(|| format!("pickle stack empty at byte {pos}"))
    }
    /// The values pushed since the last MARK (the mark removed).
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| format!("pickle: no MARK at byte {}", self.pos))?;
        Ok(self.stack.split_off(m))
    }
    fn charge(&mut self, n: usize) -> Result<(), String> {
        self.budget = self
            .budget
            .checked_sub(n)
            .ok_or("pickle copies more values than its size allows (malformed)")?;
        Ok(())
    }
    fn memo_get(&mut self, i: u32) -> Result<(), String> {
        let v = self
            .memo
            .get(&i)
            .cloned()
            .ok_or_else(|| format!("pickle memo {i} read before it was written"))?;
        self.stack.push(v);
        Ok(())
    }
    fn memo_put(&mut self, i: u32) -> Result<(), String> {
        let v = self.top()?.clone();
        self.memo.insert(i, v);
        Ok(())
    }
    /// Adds items to the list / dict on top of the stack (copying it first if shared).
    fn extend(&mut self, items: Vec<Value>, dict: bool) -> Result<(), String> {
        let pos = self.pos;
        let copy = match self.top()? {
            Value::List(l) if !dict && Rc::strong_count(l) > 1 => l.len(),
            Value::Dict(d) if dict && Rc::strong_count(d) > 1 => d.len(),
            _ => 0,
        };
        self.charge(copy)?;
        match self.top()? {
            Value::List(l) if !dict => Rc::make_mut(l).extend(items),
            Value::Dict(d) if dict => {
                if !items.len().is_multiple_of(2) {
                    return Err(format!("SETITEMS with an odd count at byte {pos}"));
                }
                let d = Rc::make_mut(d);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            other => {
                return Err(format!(
                    "pickle adds items to a {} at byte {pos}",
                    kind(other)
                ))
            }
        }
        Ok(())
    }

    fn reduce(&mut self, f: Value, args: Value) -> Result<Value, String> {
        let Value::Tuple(args) = args else {
            return Err(format!(
                "REDUCE arguments are not a tuple at byte {}",
                self.pos
            ));
        };
        let g = match f {
            Value::Global(g) => g,
            other => return Err(format!("REDUCE calls a {} (not allowed)", kind(&other))),
        };
        match g {
            Global::OrderedDict if args.is_empty() => Ok(Value::Dict(Rc::new(Vec::new()))),
            Global::RebuildV2 | Global::RebuildV3 if args.len() >= 4 => {
                let Value::Storage(storage) = &args[0] else {
                    return Err("tensor rebuild without a storage".into());
                };
                let dtype = if g == Global::RebuildV3 {
                    match args.get(6) {
                        Some(Value::Global(Global::Dtype(d))) => *d,
                        _ => return Err("_rebuild_tensor_v3 without a dtype".into()),
                    }
                } else {
                    storage.dtype
                };
                let size = ints(&args[2], "tensor size")?;
                let stride = ints(&args[3], "tensor stride")?;
                if size.len() != stride.len() {
                    return Err(format!(
                        "tensor size {size:?} and stride {stride:?} differ in rank"
                    ));
                }
                Ok(Value::Tensor(Rc::new(TensorRef {
                    storage: storage.clone(),
                    dtype,
                    offset: int(&args[1], "storage offset")?,
                    size,
                    stride,
                })))
            }
            Global::RebuildParameter if !args.is_empty() => match &args[0] {
                t @ Value::Tensor(_) => Ok(t.clone()),
                _ => Err("_rebuild_parameter of something that is not a tensor".into()),
            },
            other => Err(format!(
                "pickle calls {other:?} with {} arguments (not a tensor archive)",
                args.len()
            )),
        }
    }

    fn persistent(&mut self, pid: Value) -> Result<Value, String> {
        let bad = || "persistent id is not ('storage', type, key, location, numel)".to_string();
        let Value::Tuple(t) = pid else {
            return Err(bad());
        };
        match t.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), _, numel, ..]
                if &**tag == "storage" =>
            {
                Ok(Value::Storage(Rc::new(StorageRef {
                    dtype,
                    key: key.to_string(),
                    numel: int(numel, "storage size")?,
                })))
            }
            _ => Err(bad()),
        }
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(format!("pickle protocol {p} is not known"));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint only
                }
                b'}' => self.stack.push(Value::Dict(Rc::new(Vec::new()))),
                b']' => self.stack.push(Value::List(Rc::new(Vec::new()))),
                b')' => self.stack.push(Value::Tuple(Rc::new(Vec::new()))),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.stack
                        .push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64))
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64))
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    if n > 8 {
                        return Err(format!("LONG1 of {n} bytes at byte {at} (too large)"));
                    }
                    let b = self.take(n)?;
                    let mut buf = [0u8; 8];
                    buf[..n].copy_from_slice(b);
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        buf[n..].fill(0xff); // sign-extend
                    }
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)))
                }
                b'G' => {
                    self.take(8)?; // a float is never part of a tensor's description
                    self.stack.push(Value::Float)
                }
                b'X' | 0x8c => {
                    let n = if op == b'X' {
                        self.u32()? as usize
                    } else {
                        self.u8()? as usize
                    };
                    let b = self.take(n)?;
                    let s = std::str::from_utf8(b)
                        .map_err(|_| format!("string at byte {at} is not UTF-8"))?;
                    self.stack.push(Value::Str(s.into()))
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(global(module, name)?))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => {
                            self.stack.push(Value::Global(global(&m, &n)?))
                        }
                        _ => return Err(format!("STACK_GLOBAL of non-strings at byte {at}")),
                    }
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    self.memo_get(i)?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?
                }
                b'(' => self.marks.push(self.stack.len()),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(items)))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(Rc::new(items)))
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend(vec![v], false)?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend(items, false)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend(vec![k, v], true)?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.extend(items, true)?
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.reduce(f, args)?;
                    self.stack.push(v)
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent(pid)?;
                    self.stack.push(v)
                }
                b'b' => {
                    // OrderedDict state (`_metadata` of a state_dict): not needed, dropped.
                    let _state = self.pop()?;
                    if !matches!(self.top()?, Value::Dict(_)) {
                        return Err(format!("BUILD on a non-dict at byte {at}"));
                    }
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                other => {
                    return Err(format!(
                        "pickle opcode 0x{other:02x} at byte {at} is not part of a PyTorch tensor archive"
                    ))
                }
            }
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float => "float",
        Value::Str(_) => "str",
        Value::Tuple(_) => "tuple",
        Value::List(_) => "list",
        Value::Dict(_) => "dict",
        Value::Global(_) => "global",
        Value::Storage(_) => "storage",
        Value::Tensor(_) => "tensor",
    }
}

/// The object `data` (a `data.pkl`) describes.
pub(crate) fn unpickle(data: &[u8]) -> Result<Value, String> {
    Reader {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        budget: data.len(),
    }
    .run()
}
