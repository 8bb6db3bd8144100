#!/usr/bin/python3
"""gen_codec.py: generate NDR 2.0 codecs (C17) from an IDL subset.

    /usr/bin/python3 tools/gen_codec.py -o src/codec/gen idl/nspi.idl idl/rfr.idl ...

For idl/X.idl it writes X.h (structures, one request and one response
structure per operation) and X.c (NDR pull into an arena, NDR push, JSON
print, and the per-opnum dispatch table).  The IDL subset and the
representation rules are described in doc/internals/codec.md.
"""

import argparse
import os
import re
import sys

# --------------------------------------------------------------------------
# lexer
# --------------------------------------------------------------------------
TOKEN_RE = re.compile(r'''
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/|\#[^\n]*)
  | (?P<num>0[xX][0-9a-fA-F]+|\d+(?:\.\d+)?)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<p>[\[\](){};,*=+\-&|<>~!/.:])
''', re.S | re.X)


class IdlError(Exception):
    pass


class Tok:
    def __init__(self, kind, text, pos):
        self.kind, self.text, self.pos = kind, text, pos

    def __repr__(self):
        return 'Tok(%s,%r)' % (self.kind, self.text)


def lex(src):
    toks, pos = [], 0
    while pos < len(src):
        m = TOKEN_RE.match(src, pos)
        if not m:
            raise IdlError('bad character %r at offset %d' % (src[pos], pos))
        if not m.group('ws'):
            kind = m.lastgroup
            toks.append(Tok(kind, m.group(kind), pos))
        pos = m.end()
    toks.append(Tok('eof', '', pos))
    return toks


# --------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------
PRIMS = {
    # name: (ctype, wire size, signed)
    'u8': ('uint8_t', 1, False), 'i8': ('int8_t', 1, True),
    'u16': ('uint16_t', 2, False), 'i16': ('int16_t', 2, True),
    'u32': ('uint32_t', 4, False), 'i32': ('int32_t', 4, True),
    'u64': ('uint64_t', 8, False), 'i64': ('int64_t', 8, True),
}

TYPE_WORDS = {'unsigned', 'signed', 'short', 'long', 'int', 'char', 'small', 'hyper',
              'wchar_t', 'void', 'handle_t', 'DWORD', 'WORD', 'BYTE', 'ULONG', 'LONG',
              'USHORT', 'UCHAR', 'WCHAR', 'BOOL', 'uint8', 'uint16', 'uint32', 'uint64',
              'int8', 'int16', 'int32', 'int64', 'boolean'}


def prim_of(words):
    """Normalises a list of C type words to a primitive name, 'char', 'wchar',
    'void', 'handle' or None."""
    w = [x for x in words if x != 'int' or len(words) == 1]
    s = ' '.join(w)
    table = {
        'unsigned char': 'char', 'char': 'char', 'signed char': 'char', 'UCHAR': 'char',
        'BYTE': 'u8', 'uint8': 'u8', 'small': 'i8', 'unsigned small': 'u8', 'int8': 'i8',
        'boolean': 'u8',
        'wchar_t': 'wchar', 'WCHAR': 'wchar',
        'short': 'i16', 'signed short': 'i16', 'int16': 'i16',
        'unsigned short': 'u16', 'WORD': 'u16', 'USHORT': 'u16', 'uint16': 'u16',
        'long': 'i32', 'signed long': 'i32', 'int': 'i32', 'LONG': 'i32', 'BOOL': 'i32',
        'int32': 'i32',
        'unsigned long': 'u32', 'unsigned int': 'u32', 'unsigned': 'u32', 'DWORD': 'u32',
        'ULONG': 'u32', 'uint32': 'u32',
        'hyper': 'i64', 'int64': 'i64', 'unsigned hyper': 'u64', 'uint64': 'u64',
        'void': 'void', 'handle_t': 'handle',
    }
    return table.get(s)


class Field:
    """A struct member, union arm or parameter as declared."""

    def __init__(self, name, base, nptr, array, attrs):
        self.name, self.base, self.nptr, self.array, self.attrs = name, base, nptr, array, attrs
        self.node = None


class Struct:
    def __init__(self, name, fields):
        self.name, self.fields = name, fields


class Union:
    def __init__(self, name, switch_type, arms):
        self.name, self.switch_type, self.arms = name, switch_type, arms  # arms: (cases, Field|None)


class Func:
    def __init__(self, name, ret, params, attrs, opnum):
        self.name, self.ret, self.params, self.attrs, self.opnum = name, ret, params, attrs, opnum


class Iface:
    def __init__(self):
        self.name = None
        self.attrs = {}
        self.types = {}      # name -> Struct | Union | 'ctxh' | prim name
        self.order = []      # type names in declaration order
        self.tags = {}       # struct/union tag -> typedef name
        self.funcs = []
        self.consts = {}


# --------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------
class Parser:
    def __init__(self, src):
        self.src = src
        self.t = lex(src)
        self.i = 0

    def peek(self, k=0):
        return self.t[self.i + k]

    def next(self):
        t = self.t[self.i]
        self.i += 1
        return t

    def expect(self, text):
        t = self.next()
        if t.text != text:
            raise IdlError('expected %r, got %r at offset %d (%s)' %
                           (text, t.text, t.pos, self.where(t.pos)))
        return t

    def where(self, pos):
        return 'line %d' % (self.src.count('\n', 0, pos) + 1)

    def accept(self, text):
        if self.peek().text == text:
            self.i += 1
            return True
        return False

    def raw_parens(self):
        """After '(' : raw source text up to the matching ')'."""
        start = self.peek().pos
        depth = 1
        while True:
            t = self.next()
            if t.kind == 'eof':
                raise IdlError('unbalanced parentheses')
            if t.text == '(':
                depth += 1
            elif t.text == ')':
                depth -= 1
                if depth == 0:
                    return self.src[start:t.pos].strip()

    def attr_list(self):
        """'[' a, b(x), ... ']' -> dict; several lists accumulate."""
        attrs = {}
        while self.accept('['):
            while True:
                name = self.next().text
                if self.accept('('):
                    attrs[name] = self.raw_parens()
                else:
                    attrs[name] = True
                if self.accept(']'):
                    break
                self.expect(',')
        return attrs

    def type_words(self):
        words = []
        if self.peek().text in ('struct', 'union'):
            self.next()
            return ['tag:' + self.next().text]
        while self.peek().kind == 'id' and self.peek().text in TYPE_WORDS:
            words.append(self.next().text)
            if words[-1] not in ('unsigned', 'signed', 'short', 'long'):
                # 'short int', 'unsigned long int'
                if words[-1] != 'int' or len(words) > 1:
                    pass
        if not words:
            words = [self.next().text]
        return words

    def declarator(self, attrs):
        words = self.type_words()
        nptr = 0
        while self.accept('*'):
            nptr += 1
        attrs2 = self.attr_list()   # e.g. "[string] char *x" put before is handled by caller
        attrs.update(attrs2)
        name = self.next().text
        array = None
        if self.accept('['):
            if self.accept(']'):
                array = 'conf'
            else:
                t = self.next()
                array = int(t.text, 0)
                self.expect(']')
        return Field(name, words, nptr, array, attrs)

    def parse(self):
        ifs = []
        while self.peek().kind != 'eof':
            attrs = self.attr_list()
            self.expect('interface')
            ifc = Iface()
            ifc.name = self.next().text
            ifc.attrs = attrs
            self.expect('{')
            opnum = 0
            while not self.accept('}'):
                if self.peek().text == 'typedef':
                    self.typedef(ifc)
                    continue
                fattrs = self.attr_list()
                ret = self.type_words()
                fname = self.next().text
                self.expect('(')
                params = []
                if self.peek().text == 'void' and self.peek(1).text == ')':
                    self.next()
                if not self.accept(')'):
                    while True:
                        pattrs = self.attr_list()
                        params.append(self.declarator(pattrs))
                        if self.accept(')'):
                            break
                        self.expect(',')
                self.expect(';')
                ifc.funcs.append(Func(fname, ret, params, fattrs, opnum))
                opnum += 1
            self.accept(';')
            ifs.append(ifc)
        return ifs

    def typedef(self, ifc):
        self.expect('typedef')
        tattrs = self.attr_list()
        kw = self.peek().text
        if kw in ('struct', 'union'):
            self.next()
            tag = None
            if self.peek().kind == 'id':
                tag = self.next().text
            self.expect('{')
            members = []
            while not self.accept('}'):
                mattrs = self.attr_list()
                if kw == 'union' and ('default' in mattrs) and self.peek().text == ';':
                    self.next()
                    members.append(([None], None))
                    continue
                f = self.declarator(mattrs)
                self.expect(';')
                if kw == 'union':
                    if 'case' in f.attrs:
                        cases = [int(x.strip(), 0) for x in f.attrs['case'].split(',')]
                    elif 'default' in f.attrs:
                        cases = [None]
                    else:
                        raise IdlError('union arm %s without case' % f.name)
                    members.append((cases, f))
                else:
                    members.append(f)
            name = self.next().text
            self.expect(';')
            if kw == 'struct':
                obj = Struct(name, members)
            else:
                st = tattrs.get('switch_type', 'long')
                obj = Union(name, prim_of(st.split()), members)
            if tag:
                ifc.tags[tag] = name
            ifc.types[name] = obj
            ifc.order.append(name)
        elif kw == 'enum':
            self.next()
            self.expect('{')
            val = 0
            while not self.accept('}'):
                cname = self.next().text
                if self.accept('='):
                    val = int(self.next().text, 0)
                ifc.consts[cname] = val
                val += 1
                self.accept(',')
            name = self.next().text
            self.expect(';')
            ifc.types[name] = 'u32' if 'v1_enum' in tattrs else 'u16'
        else:
            words = self.type_words()
            nptr = 0
            while self.accept('*'):
                nptr += 1
            name = self.next().text
            self.expect(';')
            if 'context_handle' in tattrs:
                ifc.types[name] = 'ctxh'
            else:
                p = prim_of(words)
                if not p or nptr:
                    raise IdlError('unsupported typedef %s' % name)
                ifc.types[name] = p


# --------------------------------------------------------------------------
# type nodes
# --------------------------------------------------------------------------
class N:
    pass


class Prim(N):
    def __init__(self, p):
        self.p = p


class Ctxh(N):
    pass


class SRef(N):
    def __init__(self, name):
        self.name = name


class URef(N):
    def __init__(self, name, switch_is):
        self.name, self.switch_is = name, switch_is


class Ptr(N):
    def __init__(self, kind, target):
        self.kind, self.target = kind, target


class Str(N):
    def __init__(self, kind, wide, size=None):
        self.kind, self.wide, self.size = kind, wide, size
        self.top = False


class Arr(N):
    def __init__(self, elem, fixed=None, size=None, length=None, embedded=False):
        self.elem, self.fixed, self.size, self.length, self.embedded = \
            elem, fixed, size, length, embedded

    @property
    def varying(self):
        return self.length is not None


def ptr_kind(attrs, default):
    for k in ('ref', 'unique', 'ptr'):
        if k in attrs:
            return k
    return default


class Gen:
    def __init__(self, ifc, prefix, src_name):
        self.ifc, self.P, self.src_name = ifc, prefix, src_name
        self.pdef = ifc.attrs.get('pointer_default', 'unique')
        self.tmp = 0
        # resolve nodes
        for tname in ifc.order:
            obj = ifc.types[tname]
            if isinstance(obj, Struct):
                for f in obj.fields:
                    f.node = self.node(f, False)
            else:
                for cases, f in obj.arms:
                    if f:
                        f.node = self.node(f, False)
        for fn in ifc.funcs:
            fn.params = [p for p in fn.params if self.base_kind(p.base) != 'handle']
            for p in fn.params:
                p.node = self.node(p, True)
                d = []
                if 'in' in p.attrs:
                    d.append('in')
                if 'out' in p.attrs:
                    d.append('out')
                if not d:
                    raise IdlError('%s.%s: no direction' % (fn.name, p.name))
                p.dirs = d

    def resolve_name(self, words):
        if len(words) == 1 and words[0].startswith('tag:'):
            tag = words[0][4:]
            return self.ifc.tags.get(tag, tag)
        p = prim_of(words)
        if p:
            return p
        if len(words) == 1:
            return words[0]
        raise IdlError('unknown type %s' % ' '.join(words))

    def base_kind(self, words):
        n = self.resolve_name(words)
        if n in PRIMS or n in ('char', 'wchar', 'void', 'handle'):
            return n
        t = self.ifc.types.get(n)
        if t is None:
            raise IdlError('unknown type %s' % n)
        if isinstance(t, str):
            return t
        return n

    def node(self, f, top):
        name = self.resolve_name(f.base)
        kind = self.base_kind(f.base)
        a = f.attrs
        if kind in PRIMS:
            base = Prim(kind)
        elif kind == 'char':
            base = Prim('u8')
        elif kind == 'wchar':
            base = Prim('u16')
        elif kind == 'ctxh':
            base = Ctxh()
        elif kind == 'handle':
            return None
        else:
            t = self.ifc.types[name]
            if isinstance(t, Struct):
                base = SRef(name)
            else:
                if 'switch_is' not in a:
                    raise IdlError('%s: union without switch_is' % f.name)
                base = URef(name, a['switch_is'])
        levels = []
        for i in range(f.nptr):
            levels.append(ptr_kind(a, 'ref' if top else self.pdef) if i == 0 else self.pdef)
        node = base
        size, length = a.get('size_is'), a.get('length_is')
        if 'string' in a:
            if kind not in ('char', 'wchar'):
                raise IdlError('%s: [string] on non-char' % f.name)
            if levels:
                k = levels.pop()
                own = not levels and f.array is None   # size_is applies to the string itself
                node = Str(k, kind == 'wchar', size if own else None)
                if own:
                    size = None
            else:
                raise IdlError('%s: [string] array form not supported' % f.name)
        arr_on_ptr = (size or length) and f.array is None
        for idx in reversed(range(len(levels))):
            k = levels[idx]
            if idx == 0 and arr_on_ptr:
                node = Ptr(k, Arr(node, size=size, length=length))
            else:
                node = Ptr(k, node)
        if f.array is not None:
            if f.array == 'conf':
                if not (size or length):
                    raise IdlError('%s: [] without size_is' % f.name)
                node = Arr(node, size=size, length=length, embedded=not top)
            else:
                node = Arr(node, fixed=f.array)
        if top:
            # top-level pointers: [ref] ones carry no referent id
            if isinstance(node, Ptr) and node.kind == 'ref':
                node = node.target
            elif isinstance(node, Str) and node.kind == 'ref':
                node.top = True
            if isinstance(node, Arr) and not node.fixed:
                node.embedded = False
        return node

    # ---------------- helpers ----------------
    def ctype_struct(self, name):
        t = self.ifc.types[name]
        return ('struct ' if isinstance(t, Struct) else 'union ') + self.P + '_' + name

    def decl(self, node, inner):
        if isinstance(node, Prim):
            return '%s %s' % (PRIMS[node.p][0], inner)
        if isinstance(node, Ctxh):
            return 'struct mp_ctxh %s' % inner
        if isinstance(node, (SRef, URef)):
            return '%s %s' % (self.ctype_struct(node.name), inner)
        if isinstance(node, Str):
            return '%s *%s' % ('uint16_t' if node.wide else 'char', inner)
        if isinstance(node, Ptr):
            if isinstance(node.target, Arr):
                return self.decl(node.target.elem, '*' + inner)
            return self.decl(node.target, '*' + inner)
        if isinstance(node, Arr):
            if node.fixed:
                return self.decl(node.elem, '%s[%d]' % (inner, node.fixed))
            return self.decl(node.elem, '*' + inner)
        raise IdlError('decl')

    def align(self, node, seen=None):
        if isinstance(node, Prim):
            return PRIMS[node.p][1]
        if isinstance(node, (Ctxh, Ptr, Str)):
            return 4
        if isinstance(node, Arr):
            return self.align(node.elem) if (node.fixed or node.embedded) else 4
        if isinstance(node, SRef):
            return self.struct_align(node.name)
        if isinstance(node, URef):
            return max(self.union_disc_size(node.name), self.union_arm_align(node.name))
        raise IdlError('align')

    def struct_align(self, name):
        s = self.ifc.types[name]
        a = 1
        for f in s.fields:
            a = max(a, self.align(f.node))
            if isinstance(f.node, Arr) and f.node.embedded and not f.node.fixed:
                a = max(a, 4)
        return a

    def union_disc_size(self, name):
        return PRIMS[self.ifc.types[name].switch_type][1]

    def union_arm_align(self, name):
        a = 1
        for cases, f in self.ifc.types[name].arms:
            if f:
                a = max(a, self.align(f.node))
        return a

    def min_wire(self, node):
        if isinstance(node, Prim):
            return PRIMS[node.p][1]
        if isinstance(node, Ctxh):
            return 20
        if isinstance(node, (Ptr, Str)):
            return 4
        if isinstance(node, Arr):
            if node.fixed:
                return node.fixed * self.min_wire(node.elem)
            return 0
        if isinstance(node, SRef):
            return sum(self.min_wire(f.node) for f in self.ifc.types[node.name].fields)
        if isinstance(node, URef):
            return self.union_disc_size(node.name)
        raise IdlError('min_wire')

    def has_buffers(self, node):
        if isinstance(node, (Ptr, Str)):
            return True
        if isinstance(node, (Prim, Ctxh)):
            return False
        if isinstance(node, Arr):
            return (not node.fixed and not node.embedded) or self.has_buffers(node.elem)
        if isinstance(node, SRef):
            return any(self.has_buffers(f.node) for f in self.ifc.types[node.name].fields)
        if isinstance(node, URef):
            return any(f and self.has_buffers(f.node) for c, f in self.ifc.types[node.name].arms)
        raise IdlError('has_buffers')

    def conformant(self, sname):
        s = self.ifc.types[sname]
        last = s.fields[-1].node if s.fields else None
        if isinstance(last, Arr) and last.embedded and not last.fixed:
            return last
        for f in s.fields:
            if isinstance(f.node, SRef) and self.conformant(f.node.name):
                raise IdlError('%s: embedded conformant struct not supported' % sname)
        return None

    def expr(self, text, scope):
        """IDL expression -> C, with identifiers looked up in scope (name ->
        C lvalue).  None when an identifier is not in scope."""
        toks = lex(text)[:-1]
        out = []
        i = 0
        prev = None
        while i < len(toks):
            t = toks[i]
            if t.text == '(' and i + 2 < len(toks) and toks[i + 2].text == ')' and \
                    toks[i + 1].text in TYPE_WORDS:
                i += 3
                prev = 'op'
                continue
            if t.text == '*' and prev in (None, 'op'):
                i += 1
                continue  # dereference: pointers to scalars are flattened
            if t.kind == 'id':
                if t.text not in scope:
                    return None
                out.append(scope[t.text])
                prev = 'val'
            elif t.kind == 'num':
                out.append(t.text + ('u' if not t.text.endswith('u') else ''))
                prev = 'val'
            else:
                out.append(t.text)
                prev = 'val' if t.text == ')' else 'op'
            i += 1
        return '(uint32_t)(' + ' '.join(out) + ')'

    def var(self, base='v'):
        self.tmp += 1
        return '%s%d' % (base, self.tmp)


# --------------------------------------------------------------------------
# C emission
# --------------------------------------------------------------------------
PULL_FN = {'u8': 'mp_cdc_u8', 'i8': 'mp_cdc_u8', 'u16': 'mp_cdc_u16', 'i16': 'mp_cdc_u16',
           'u32': 'mp_cdc_u32', 'i32': 'mp_cdc_u32', 'u64': 'mp_cdc_u64', 'i64': 'mp_cdc_u64'}
PUSH_FN = {'u8': 'mp_cdp_u8', 'i8': 'mp_cdp_u8', 'u16': 'mp_cdp_u16', 'i16': 'mp_cdp_u16',
           'u32': 'mp_cdp_u32', 'i32': 'mp_cdp_u32', 'u64': 'mp_cdp_u64', 'i64': 'mp_cdp_u64'}
UNS = {'u8': 'uint8_t', 'i8': 'uint8_t', 'u16': 'uint16_t', 'i16': 'uint16_t', 'u32': 'uint32_t',
       'i32': 'uint32_t', 'u64': 'uint64_t', 'i64': 'uint64_t'}

FAIL = 'return -1;'


class Emitter(Gen):
    # ---------------- pull ----------------
    def pull_S(self, node, lv, sc, o, post):
        if isinstance(node, Prim):
            o.append('%s = (%s)%s(c);' % (lv, PRIMS[node.p][0], PULL_FN[node.p]))
        elif isinstance(node, Ctxh):
            o.append('mp_cdc_align(c, 4);')
            o.append('mp_cdc_ctxh(c, &%s);' % lv)
        elif isinstance(node, SRef):
            o.append('if (pull_S_%s(c, &%s)) %s' % (node.name, lv, FAIL))
        elif isinstance(node, URef):
            e = self.expr(node.switch_is, sc)
            o.append('if (pull_S_%s(c, &%s, %s)) %s' % (node.name, lv, e, FAIL))
        elif isinstance(node, (Ptr, Str)):
            if isinstance(node, Str) and node.top:
                o.append('%s = MP_NONNULL;' % lv)
                return
            v = self.var('id')
            o.append('{')
            o.append('uint32_t %s = mp_cdc_ref(c);' % v)
            if node.kind == 'ref':
                o.append('if (!%s) { mp_cdc_fail(c); %s }' % (v, FAIL))
            if isinstance(node, Str) or isinstance(node.target, Arr):
                o.append('%s = %s ? MP_NONNULL : NULL;' % (lv, v))
            else:
                o.append('%s = NULL;' % lv)
                o.append('if (%s && !(%s = mp_arena_alloc(c->a, sizeof *%s))) { mp_cdc_fail(c); %s }'
                         % (v, lv, lv, FAIL))
            o.append('}')
        elif isinstance(node, Arr):
            if node.fixed:
                if isinstance(node.elem, Prim) and node.elem.p == 'u8':
                    q = self.var('q')
                    o.append('{ const uint8_t *%s = mp_ndr_bytes(&c->n, %d); if (!%s) %s memcpy(%s, %s, %d); }'
                             % (q, node.fixed, q, FAIL, lv, q, node.fixed))
                else:
                    i = self.var('i')
                    o.append('for (uint32_t %s = 0; %s < %d; %s++) {' % (i, i, node.fixed, i))
                    self.pull_S(node.elem, '%s[%s]' % (lv, i), sc, o, post)
                    o.append('}')
            elif node.embedded:
                # conformance was hoisted to the struct start: local cmax
                n = self.var('n')
                if node.varying:
                    o.append('mp_cdc_align(c, 4);')
                    o.append('if (mp_cdc_u32(c) != 0) { mp_cdc_fail(c); %s }' % FAIL)
                    o.append('uint32_t %s = mp_cdc_u32(c);' % n)
                    o.append('if (c->n.err || %s > cmax || %s != %s) { mp_cdc_fail(c); %s }'
                             % (n, n, self.expr(node.length, sc), FAIL))
                else:
                    o.append('uint32_t %s = cmax;' % n)
                    o.append('if (%s != %s) { mp_cdc_fail(c); %s }' % (n, self.expr(node.size, sc), FAIL))
                self.pull_elems(node, lv, n, sc, o, post, buffers=False)
            else:
                o.append('%s = MP_NONNULL;' % lv)  # top-level array: all in buffers
        else:
            raise IdlError('pull_S')

    def pull_elems(self, arr, lv, n, sc, o, post, buffers=True):
        e = arr.elem
        if isinstance(e, Prim) and e.p == 'u8':  # copied from the stub, not zeroed first
            o.append('if (!(%s = mp_cdc_bytes(c, %s))) %s' % (lv, n, FAIL))
            return
        o.append('if (!(%s = mp_cdc_array(c, %s, sizeof *%s, %d))) %s'
                 % (lv, n, lv, max(1, self.min_wire(e)), FAIL))
        i = self.var('i')
        o.append('for (uint32_t %s = 0; %s < %s; %s++) {' % (i, i, n, i))
        self.pull_S(e, '%s[%s]' % (lv, i), sc, o, post)
        o.append('}')
        o.append('if (c->n.err) %s' % FAIL)
        if buffers and self.has_buffers(e):
            o.append('for (uint32_t %s = 0; %s < %s; %s++) {' % (i, i, n, i))
            self.pull_B(e, '%s[%s]' % (lv, i), sc, o, post)
            o.append('}')

    def pull_arr_full(self, arr, lv, sc, o, post):
        """A conformant (varying) array that is a pointee or a top-level parameter."""
        mx, n = self.var('mx'), self.var('n')
        o.append('mp_cdc_align(c, 4);')
        if arr.varying:
            o.append('uint32_t %s = mp_cdc_varmax(c);' % mx)
            o.append('if (mp_cdc_u32(c) != 0) { mp_cdc_fail(c); %s }' % FAIL)
            o.append('uint32_t %s = mp_cdc_u32(c);' % n)
            o.append('if (c->n.err || %s > %s) { mp_cdc_fail(c); %s }' % (n, mx, FAIL))
            chk = self.expr(arr.length, sc)
        else:
            o.append('uint32_t %s = mp_cdc_u32(c);' % n)
            o.append('(void)0;')
            chk = self.expr(arr.size, sc)
            if chk is None:
                raise IdlError('conformant array size_is(%s) not available' % arr.size)
        if chk is not None:
            if post is None:
                o.append('if (%s != %s) { mp_cdc_fail(c); %s }' % (n, chk, FAIL))
            else:
                post.append('if (%s != %s) { mp_cdc_fail(c); %s }' % (n, chk, FAIL))
                o.insert(0, 'uint32_t %s = 0;' % n)
                o[o.index('uint32_t %s = mp_cdc_u32(c);' % n)] = '%s = mp_cdc_u32(c);' % n
        self.pull_elems(arr, lv, n, sc, o, post)

    def pull_B(self, node, lv, sc, o, post):
        if isinstance(node, (Prim, Ctxh)):
            return
        if isinstance(node, SRef):
            if self.has_buffers(node):
                o.append('if (pull_B_%s(c, &%s)) %s' % (node.name, lv, FAIL))
        elif isinstance(node, URef):
            if self.has_buffers(node):
                o.append('if (pull_B_%s(c, &%s, %s)) %s'
                         % (node.name, lv, self.expr(node.switch_is, sc), FAIL))
        elif isinstance(node, Str):
            o.append('if (%s && !(%s = %s(c))) %s'
                     % (lv, lv, 'mp_cdc_wstring' if node.wide else 'mp_cdc_string', FAIL))
        elif isinstance(node, Ptr):
            o.append('if (%s) {' % lv)
            o.append('if (!mp_cdc_enter(c)) %s' % FAIL)
            t = node.target
            if isinstance(t, Arr):
                self.pull_arr_full(t, lv, sc, o, None)
            elif isinstance(t, Str):
                self.pull_S(t, '(*%s)' % lv, sc, o, None)
                self.pull_B(t, '(*%s)' % lv, sc, o, None)
            else:
                self.pull_S(t, '(*%s)' % lv, sc, o, None)
                self.pull_B(t, '(*%s)' % lv, sc, o, None)
            o.append('mp_cdc_leave(c);')
            o.append('}')
        elif isinstance(node, Arr):
            if node.fixed or node.embedded:
                if self.has_buffers(node.elem):
                    n = self.count_expr(node, sc)
                    i = self.var('i')
                    o.append('for (uint32_t %s = 0; %s < %s; %s++) {' % (i, i, n, i))
                    self.pull_B(node.elem, '%s[%s]' % (lv, i), sc, o, post)
                    o.append('}')
            else:
                sub = []
                self.pull_arr_full(node, lv, sc, sub, post)
                # declarations hoisted by pull_arr_full (post checks) go first
                o.append('{')
                o.extend(sub)
                o.append('}')
        else:
            raise IdlError('pull_B')

    def count_expr(self, arr, sc):
        if arr.fixed:
            return str(arr.fixed)
        e = self.expr(arr.length if arr.varying else arr.size, sc)
        if e is None:
            raise IdlError('array count %s not available' % (arr.length or arr.size))
        return e

    # ---------------- push ----------------
    def push_S(self, node, lv, sc, o):
        if isinstance(node, Prim):
            o.append('%s(p, (%s)%s);' % (PUSH_FN[node.p], UNS[node.p], lv))
        elif isinstance(node, Ctxh):
            o.append('mp_cdp_align(p, 4);')
            o.append('mp_cdp_ctxh(p, &%s);' % lv)
        elif isinstance(node, SRef):
            o.append('if (push_S_%s(p, &%s)) %s' % (node.name, lv, FAIL))
        elif isinstance(node, URef):
            o.append('if (push_S_%s(p, &%s, %s)) %s'
                     % (node.name, lv, self.expr(node.switch_is, sc), FAIL))
        elif isinstance(node, (Ptr, Str)):
            if isinstance(node, Str) and node.top:
                return
            if node.kind == 'ref':
                o.append('if (!%s) { mp_cdp_fail(p); %s }' % (lv, FAIL))
            o.append('mp_cdp_ref(p, %s);' % lv)
        elif isinstance(node, Arr):
            if node.fixed:
                if isinstance(node.elem, Prim) and node.elem.p == 'u8':
                    o.append('mp_cdp_bytes(p, %s, %d);' % (lv, node.fixed))
                else:
                    i = self.var('i')
                    o.append('for (uint32_t %s = 0; %s < %d; %s++) {' % (i, i, node.fixed, i))
                    self.push_S(node.elem, '%s[%s]' % (lv, i), sc, o)
                    o.append('}')
            elif node.embedded:
                n = self.count_expr(node, sc)
                if node.varying:
                    o.append('mp_cdp_align(p, 4);')
                    o.append('mp_cdp_u32(p, 0);')
                    o.append('mp_cdp_u32(p, %s);' % n)
                self.push_elems(node, lv, n, sc, o, buffers=False)
        else:
            raise IdlError('push_S')

    def push_elems(self, arr, lv, n, sc, o, buffers=True):
        e = arr.elem
        o.append('if (%s && !%s) { mp_cdp_fail(p); %s }' % (n, lv, FAIL))
        if isinstance(e, Prim) and e.p == 'u8':
            o.append('mp_cdp_bytes(p, %s, %s);' % (lv, n))
            return
        i = self.var('i')
        o.append('for (uint32_t %s = 0; %s < %s; %s++) {' % (i, i, n, i))
        self.push_S(e, '%s[%s]' % (lv, i), sc, o)
        o.append('}')
        if buffers and self.has_buffers(e):
            o.append('for (uint32_t %s = 0; %s < %s; %s++) {' % (i, i, n, i))
            self.push_B(e, '%s[%s]' % (lv, i), sc, o)
            o.append('}')

    def push_arr_full(self, arr, lv, sc, o):
        n = self.count_expr(arr, sc)
        o.append('mp_cdp_align(p, 4);')
        if arr.varying:
            size = self.expr(arr.size, sc) if arr.size else None
            o.append('mp_cdp_u32(p, mp_cdp_varmax(p, %s, %s));' % (size or n, n))
            o.append('mp_cdp_u32(p, 0);')
            o.append('mp_cdp_u32(p, %s);' % n)
        else:
            o.append('mp_cdp_u32(p, %s);' % n)
        self.push_elems(arr, lv, n, sc, o)

    def push_B(self, node, lv, sc, o):
        if isinstance(node, (Prim, Ctxh)):
            return
        if isinstance(node, SRef):
            if self.has_buffers(node):
                o.append('if (push_B_%s(p, &%s)) %s' % (node.name, lv, FAIL))
        elif isinstance(node, URef):
            if self.has_buffers(node):
                o.append('if (push_B_%s(p, &%s, %s)) %s'
                         % (node.name, lv, self.expr(node.switch_is, sc), FAIL))
        elif isinstance(node, Str):
            canon = self.expr(node.size, sc) if node.size else None
            fn = 'mp_cdp_wstring' if node.wide else 'mp_cdp_string'
            if node.top:
                o.append('if (!%s) { mp_cdp_fail(p); %s }' % (lv, FAIL))
            o.append('if (%s) { mp_cdp_align(p, 4); %s(p, %s, %s); }' % (lv, fn, lv, canon or '0'))
        elif isinstance(node, Ptr):
            o.append('if (%s) {' % lv)
            o.append('if (!mp_cdp_enter(p)) %s' % FAIL)
            t = node.target
            if isinstance(t, Arr):
                self.push_arr_full(t, lv, sc, o)
            else:
                self.push_S(t, '(*%s)' % lv, sc, o)
                self.push_B(t, '(*%s)' % lv, sc, o)
            o.append('mp_cdp_leave(p);')
            o.append('}')
        elif isinstance(node, Arr):
            if node.fixed or node.embedded:
                if self.has_buffers(node.elem):
                    n = self.count_expr(node, sc)
                    i = self.var('i')
                    o.append('for (uint32_t %s = 0; %s < %s; %s++) {' % (i, i, n, i))
                    self.push_B(node.elem, '%s[%s]' % (lv, i), sc, o)
                    o.append('}')
            else:
                o.append('{')
                self.push_arr_full(node, lv, sc, o)
                o.append('}')

    # ---------------- print ----------------
    @staticmethod
    def is_tag(name):
        """Property tags (ulPropTag, aulPropTag, ulPropTag1...) print as hex
        "0x0037001F", as every MAPI tool shows them.  MS-NSPI reuses
        PropertyTagArray_r for MIds: those print in hex too."""
        return 'PropTag' in name

    def prt(self, node, lv, sc, o, tag=False):
        if isinstance(node, Prim):
            if tag and node.p in ('u32', 'i32'):
                o.append('mp_codec_print_tag(j, (uint32_t)%s);' % lv)
            elif PRIMS[node.p][2]:
                o.append('mp_json_i64(j, %s);' % lv)
            else:
                o.append('mp_json_u64(j, %s);' % lv)
        elif isinstance(node, Ctxh):
            o.append('mp_codec_print_ctxh(j, &%s);' % lv)
        elif isinstance(node, SRef):
            o.append('print_%s(j, &%s);' % (node.name, lv))
        elif isinstance(node, URef):
            o.append('print_%s(j, &%s, %s);' % (node.name, lv, self.expr(node.switch_is, sc)))
        elif isinstance(node, Str):
            o.append('%s(j, %s);' % ('mp_json_wstr' if node.wide else 'mp_json_str', lv))
        elif isinstance(node, Ptr):
            o.append('if (!%s) mp_json_null(j); else {' % lv)
            if isinstance(node.target, Arr):
                self.prt_arr(node.target, lv, sc, o, tag)
            else:
                self.prt(node.target, '(*%s)' % lv, sc, o, tag)
            o.append('}')
        elif isinstance(node, Arr):
            self.prt_arr(node, lv, sc, o, tag)

    def prt_arr(self, arr, lv, sc, o, tag=False):
        n = self.count_expr(arr, sc)
        if isinstance(arr.elem, Prim) and arr.elem.p == 'u8':
            o.append('mp_json_hex(j, %s, %s);' % (lv, n))
            return
        i = self.var('i')
        o.append('mp_json_arr_begin(j);')
        guard = '' if arr.fixed else 'if (%s) ' % lv
        o.append('%sfor (uint32_t %s = 0; %s < %s; %s++) {' % (guard, i, i, n, i))
        self.prt(arr.elem, '%s[%s]' % (lv, i), sc, o, tag)
        o.append('}')
        o.append('mp_json_arr_end(j);')

    # ---------------- range checks ----------------
    def range_check(self, f, lv, o, fail):
        r = f.attrs.get('range')
        if not r or not isinstance(f.node, Prim):
            return
        lo, hi = [int(x.strip(), 0) for x in r.split(',')]
        conds = []
        if lo > 0 or PRIMS[f.node.p][2]:
            conds.append('%s < %d' % (lv, lo))
        conds.append('%s > %du' % (lv, hi) if not PRIMS[f.node.p][2] else '%s > %d' % (lv, hi))
        o.append('if (%s) { %s }' % (' || '.join(conds), fail))

    # ---------------- whole files ----------------
    def gen(self):
        P = self.P
        ifc = self.ifc
        h, c = [], []
        hdr = '/* generated by tools/gen_codec.py from %s -- do not edit */' % self.src_name
        guard = 'MP_CODEC_GEN_%s_H' % P.upper()
        # the public header (include/mapiproxy/calls/P.h): the structures
        # alone; the internal one (src/codec/gen/P.h) adds the codec table
        pguard = 'MAPIPROXY_CALLS_%s_H' % P.upper()
        h += [hdr.replace('-- do not edit', '-- do not edit\n * Public: the request/response structures of the %s calls, as\n'
                          ' * mp_call_request()/mp_call_response() return them.' % ifc.name),
              '#ifndef ' + pguard, '#define ' + pguard, '#include <stdint.h>', '',
              '#include "../ndr_types.h"', '']
        for k, v in ifc.consts.items():
            h.append('#define %s_%s %du' % (P.upper(), k, v))
        # forward declarations
        for tname in ifc.order:
            h.append('%s;' % self.ctype_struct(tname))
        h.append('')
        # definitions, in an order where embedded types come first
        done = set()

        def emit_type(tname):
            if tname in done:
                return
            done.add(tname)
            obj = ifc.types[tname]
            members = obj.fields if isinstance(obj, Struct) else [f for cs, f in obj.arms if f]
            for f in members:
                nd = f.node
                while isinstance(nd, Arr) and nd.fixed:
                    nd = nd.elem
                if isinstance(nd, (SRef, URef)):
                    emit_type(nd.name)
            h.append('%s {' % self.ctype_struct(tname))
            if not members:
                h.append('    uint8_t unused_;')
            for f in members:
                com = ''
                if isinstance(f.node, Ptr) and isinstance(f.node.target, Arr):
                    a = f.node.target
                    com = ' /* [%s] */' % ('%s of %s' % (a.length, a.size) if a.varying else a.size)
                elif isinstance(f.node, Arr) and not f.node.fixed:
                    a = f.node
                    com = ' /* [%s] */' % (a.length if a.varying else a.size)
                if isinstance(obj, Union):
                    cs = [x for x, ff in obj.arms if ff is f][0]
                    com = ' /* case %s */' % ', '.join('default' if x is None else '0x%x' % x for x in cs)
                h.append('    %s;%s' % (self.decl(f.node, f.name), com))
            h.append('};')
            h.append('')

        for tname in ifc.order:
            emit_type(tname)

        for fn in ifc.funcs:
            if 'reserved' in fn.attrs:
                continue
            for d in ('in', 'out'):
                h.append('/* %s (opnum %d) %s */' % (fn.name, fn.opnum, 'request' if d == 'in' else 'response'))
                h.append('struct %s_%s_%s {' % (P, fn.name, d))
                n0 = len(h)
                for p in fn.params:
                    if d in p.dirs:
                        h.append('    %s;' % self.decl(p.node, p.name))
                if d == 'out' and self.ret_prim(fn):
                    h.append('    %s;' % self.decl(Prim(self.ret_prim(fn)), 'result'))
                if len(h) == n0:  # no parameters this way: C wants a member
                    h.append('    uint8_t unused_;')
                h.append('};')
                h.append('')
        h.append('#endif')
        ih = [hdr, '#ifndef ' + guard, '#define ' + guard, '',
              '#include "codec/ndr_rt.h"', '#include "mapiproxy/calls/%s.h"' % P, '',
              'struct mp_codec_iface;',
              'extern const struct mp_codec_iface mp_codec_iface_%s;' % P, '#endif']

        # ---- C file
        c += [hdr, '#include "codec/gen/%s.h"' % P, '', '#include <string.h>', '',
              '#include "codec/codec.h"', '#include "core/json.h"', '']
        protos, body = [], []
        for tname in ifc.order:
            obj = ifc.types[tname]
            ct = self.ctype_struct(tname)
            if isinstance(obj, Struct):
                protos += [
                    'static int pull_S_%s(struct mp_cdc *c, %s *r);' % (tname, ct),
                    'static int pull_B_%s(struct mp_cdc *c, %s *r);' % (tname, ct),
                    'static int push_S_%s(struct mp_cdp *p, const %s *r);' % (tname, ct),
                    'static int push_B_%s(struct mp_cdp *p, const %s *r);' % (tname, ct),
                    'static void print_%s(struct mp_json *j, const %s *r);' % (tname, ct)]
                body += self.gen_struct(tname, obj, ct)
            else:
                protos += [
                    'static int pull_S_%s(struct mp_cdc *c, %s *r, uint32_t sw);' % (tname, ct),
                    'static int pull_B_%s(struct mp_cdc *c, %s *r, uint32_t sw);' % (tname, ct),
                    'static int push_S_%s(struct mp_cdp *p, const %s *r, uint32_t sw);' % (tname, ct),
                    'static int push_B_%s(struct mp_cdp *p, const %s *r, uint32_t sw);' % (tname, ct),
                    'static void print_%s(struct mp_json *j, const %s *r, uint32_t sw);' % (tname, ct)]
                body += self.gen_union(tname, obj, ct)
        # unused static functions (e.g. buffers of scalar-only structs) are fine:
        c += ['#if defined(__GNUC__)', '#pragma GCC diagnostic ignored "-Wunused-function"', '#endif']
        c += protos + [''] + body
        table = []
        for fn in ifc.funcs:
            if 'reserved' in fn.attrs:
                table.append('    [%d] = {"%s", %d, NULL, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL,'
                             ' NULL, NULL, NULL, NULL},' % (fn.opnum, ifc.name, fn.opnum))
                continue
            c += self.gen_call(fn)
            nm = '%s_%s' % (P, fn.name)
            f = fn.name
            table.append(
                '    [%d] = {"%s", %d, "%s", sizeof(struct %s_in), sizeof(struct %s_out), pull_in_%s,'
                ' pull_out_%s, push_in_%s, push_out_%s, print_in_%s, print_out_%s,'
                ' pull_in_w_%s, pull_out_w_%s, push_in_w_%s, push_out_w_%s},'
                % (fn.opnum, ifc.name, fn.opnum, fn.name, nm, nm, f, f, f, f, f, f, f, f, f, f))
        uuid = ifc.attrs['uuid'].strip('"')
        ver = str(ifc.attrs.get('version', '0.0'))
        major, _, minor = ver.partition('.')
        ub = uuid_bytes(uuid)
        c.append('static const struct mp_call_codec calls[] = {')
        c += table
        c.append('};')
        c.append('')
        c.append('const struct mp_codec_iface mp_codec_iface_%s = {' % P)
        c.append('    "%s", "%s",' % (ifc.name, P))
        c.append('    {%s},' % ', '.join('0x%02x' % b for b in ub))
        c.append('    %s, %s, calls, %d};' % (int(major), int(minor or 0), len(ifc.funcs)))
        return '\n'.join(h) + '\n', '\n'.join(ih) + '\n', '\n'.join(c) + '\n'

    def ret_prim(self, fn):
        k = self.base_kind(fn.ret)
        if k == 'void':
            return None
        if k not in PRIMS:
            raise IdlError('%s: unsupported return type' % fn.name)
        return k

    def struct_scope(self, obj):
        return {f.name: 'r->' + f.name for f in obj.fields}

    def gen_struct(self, tname, obj, ct):
        sc = self.struct_scope(obj)
        conf = self.conformant(tname)
        o = ['static int pull_S_%s(struct mp_cdc *c, %s *r)' % (tname, ct), '{']
        if conf:
            o.append('mp_cdc_align(c, 4);')
            o.append('uint32_t cmax = %s;' % ('mp_cdc_varmax(c)' if conf.varying else 'mp_cdc_u32(c)'))
        o.append('mp_cdc_align(c, %d);' % self.struct_align(tname))
        for f in obj.fields:
            self.pull_S(f.node, 'r->' + f.name, sc, o, None)
            self.range_check(f, 'r->' + f.name, o, 'mp_cdc_fail(c); return -1;')
        o += ['return c->n.err ? -1 : 0;', '}', '']
        o += ['static int pull_B_%s(struct mp_cdc *c, %s *r)' % (tname, ct), '{']
        for f in obj.fields:
            self.pull_B(f.node, 'r->' + f.name, sc, o, None)
        o += ['(void)r;', 'return c->n.err ? -1 : 0;', '}', '']
        o += ['static int push_S_%s(struct mp_cdp *p, const %s *r)' % (tname, ct), '{']
        if conf:
            o.append('mp_cdp_align(p, 4);')
            if conf.varying:
                n = self.count_expr(conf, sc)
                o.append('mp_cdp_u32(p, mp_cdp_varmax(p, %s, %s));' % (self.expr(conf.size, sc), n))
            else:
                o.append('mp_cdp_u32(p, %s);' % self.count_expr(conf, sc))
        o.append('mp_cdp_align(p, %d);' % self.struct_align(tname))
        for f in obj.fields:
            self.push_S(f.node, 'r->' + f.name, sc, o)
        o += ['return p->err ? -1 : 0;', '}', '']
        o += ['static int push_B_%s(struct mp_cdp *p, const %s *r)' % (tname, ct), '{']
        for f in obj.fields:
            self.push_B(f.node, 'r->' + f.name, sc, o)
        o += ['(void)r;', 'return p->err ? -1 : 0;', '}', '']
        o += ['static void print_%s(struct mp_json *j, const %s *r)' % (tname, ct), '{',
              'mp_json_obj_begin(j);']
        for f in obj.fields:
            o.append('mp_json_key(j, "%s");' % f.name)
            self.prt(f.node, 'r->' + f.name, sc, o, self.is_tag(f.name))
        o += ['mp_json_obj_end(j);', '}', '']
        return indent(o)

    def gen_union(self, tname, obj, ct):
        ds = self.union_disc_size(tname)
        dfn = {1: 'mp_cdc_u8', 2: 'mp_cdc_u16', 4: 'mp_cdc_u32'}[ds]
        pfn = {1: 'mp_cdp_u8', 2: 'mp_cdp_u16', 4: 'mp_cdp_u32'}[ds]
        aa = self.union_arm_align(tname)
        sc = {}

        def cases(cs):
            return ' '.join('default:' if x is None else 'case 0x%x:' % x for x in cs)

        has_default = any(None in cs for cs, f in obj.arms)
        o = ['static int pull_S_%s(struct mp_cdc *c, %s *r, uint32_t sw)' % (tname, ct), '{']
        o.append('if (%s(c) != sw) { mp_cdc_fail(c); return -1; }' % dfn)
        o.append('mp_cdc_align(c, %d);' % aa)
        o.append('switch (sw) {')
        for cs, f in obj.arms:
            o.append(cases(cs))
            if f:
                self.pull_S(f.node, 'r->' + f.name, sc, o, None)
            o.append('break;')
        if not has_default:
            o.append('default: mp_cdc_fail(c); return -1;')
        o += ['}', 'return c->n.err ? -1 : 0;', '}', '']
        o += ['static int pull_B_%s(struct mp_cdc *c, %s *r, uint32_t sw)' % (tname, ct), '{',
              'switch (sw) {']
        for cs, f in obj.arms:
            if f and self.has_buffers(f.node):
                o.append(cases(cs))
                self.pull_B(f.node, 'r->' + f.name, sc, o, None)
                o.append('break;')
        o += ['default: break;', '}', '(void)r;', 'return c->n.err ? -1 : 0;', '}', '']
        o += ['static int push_S_%s(struct mp_cdp *p, const %s *r, uint32_t sw)' % (tname, ct), '{']
        o.append('%s(p, (uint%d_t)sw);' % (pfn, ds * 8))
        o.append('mp_cdp_align(p, %d);' % aa)
        o.append('switch (sw) {')
        for cs, f in obj.arms:
            o.append(cases(cs))
            if f:
                self.push_S(f.node, 'r->' + f.name, sc, o)
            o.append('break;')
        if not has_default:
            o.append('default: mp_cdp_fail(p); return -1;')
        o += ['}', 'return p->err ? -1 : 0;', '}', '']
        o += ['static int push_B_%s(struct mp_cdp *p, const %s *r, uint32_t sw)' % (tname, ct), '{',
              'switch (sw) {']
        for cs, f in obj.arms:
            if f and self.has_buffers(f.node):
                o.append(cases(cs))
                self.push_B(f.node, 'r->' + f.name, sc, o)
                o.append('break;')
        o += ['default: break;', '}', '(void)r;', 'return p->err ? -1 : 0;', '}', '']
        o += ['static void print_%s(struct mp_json *j, const %s *r, uint32_t sw)' % (tname, ct), '{',
              'mp_json_obj_begin(j);', 'switch (sw) {']
        for cs, f in obj.arms:
            o.append(cases(cs))
            if f:
                o.append('mp_json_key(j, "%s");' % f.name)
                self.prt(f.node, 'r->' + f.name, sc, o, self.is_tag(f.name))
            o.append('break;')
        if not has_default:
            o.append('default: break;')
        o += ['}', 'mp_json_obj_end(j);', '}', '']
        return indent(o)

    def gen_call(self, fn):
        P = self.P
        o = []
        for d in ('in', 'out'):
            st = 'struct %s_%s_%s' % (P, fn.name, d)
            params = [p for p in fn.params if d in p.dirs]
            sc = {p.name: 'r->' + p.name for p in params}
            rp = self.ret_prim(fn) if d == 'out' else None
            # pull
            o += ['static int pull_%s_w_%s(const uint8_t *stub, size_t len, void *v, struct mp_arena *a,'
                  ' struct mp_ndr_wire *w)' % (d, fn.name), '{', '%s *r = v;' % st,
                  'memset(r, 0, sizeof *r);', 'struct mp_ndr_wire scratch;', 'if (!w) w = &scratch;',
                  'memset(w, 0, sizeof *w);',
                  'struct mp_cdc cc, *c = &cc;', 'mp_cdc_init(c, stub, len, a, w);']
            post, body = [], []
            for p in params:
                self.pull_S(p.node, 'r->' + p.name, sc, body, post)
                self.range_check(p, 'r->' + p.name, body, 'mp_cdc_fail(c); return -1;')
                self.pull_B(p.node, 'r->' + p.name, sc, body, post)
                body.append('if (c->n.err) return -1;')
            if rp:
                self.pull_S(Prim(rp), 'r->result', sc, body, post)
            # hoist 'uint32_t nX = 0;' declarations of post-checked counts
            decls = [x for x in body if x.startswith('uint32_t n') and x.endswith(' = 0;')]
            body = [x for x in body if x not in decls]
            o += decls + body + post + ['return mp_cdc_finish(c);', '}', '']
            o += ['static int pull_%s_%s(const uint8_t *stub, size_t len, void *v, struct mp_arena *a)'
                  % (d, fn.name), '{', 'return pull_%s_w_%s(stub, len, v, a, NULL);' % (d, fn.name),
                  '}', '']
            # push
            o += ['static int push_%s_w_%s(struct mp_buf *b, const void *v, const struct mp_ndr_wire *w)'
                  % (d, fn.name), '{',
                  'const %s *r = v;' % st, '(void)r;', 'struct mp_cdp pp, *p = &pp;',
                  'mp_cdp_init(p, b, w);']
            for p in params:
                body = []
                self.push_S(p.node, 'r->' + p.name, sc, body)
                self.push_B(p.node, 'r->' + p.name, sc, body)
                body = [x.replace(FAIL, '{ mp_cdp_fail(p); return mp_cdp_finish(p); }') for x in body]
                o += body
            if rp:
                o.append('mp_cdp_u32(p, (uint32_t)r->result);' if PRIMS[rp][1] == 4 else
                         '%s(p, (%s)r->result);' % (PUSH_FN[rp], UNS[rp]))
            o += ['return mp_cdp_finish(p);', '}', '']
            o += ['static int push_%s_%s(struct mp_buf *b, const void *v)' % (d, fn.name), '{',
                  'return push_%s_w_%s(b, v, NULL);' % (d, fn.name), '}', '']
            # print
            o += ['static void print_%s_%s(struct mp_json *j, const void *v)' % (d, fn.name), '{',
                  'const %s *r = v;' % st, 'mp_json_obj_begin(j);']
            for p in params:
                o.append('mp_json_key(j, "%s");' % p.name)
                self.prt(p.node, 'r->' + p.name, sc, o, self.is_tag(p.name))
            if rp:
                o.append('mp_json_key(j, "result");')
                self.prt(Prim(rp), 'r->result', sc, o)
            o += ['(void)r;', 'mp_json_obj_end(j);', '}', '']
        return indent(o)


def indent(lines):
    out, depth = [], 0
    for ln in lines:
        s = ln.strip()
        if not s:
            out.append('')
            continue
        opens = s.count('{') - s.count('}')
        if s.startswith('}'):
            depth -= 1
            opens += 1
        if s.startswith('case ') or s.startswith('default:'):
            out.append('    ' * max(depth - 1, 0) + '  ' + s)
        elif s.endswith(':') and re.match(r'^[a-z_]+:$', s):
            out.append(s)
        else:
            out.append('    ' * depth + s)
        depth += opens
    return out


def uuid_bytes(u):
    parts = u.split('-')
    a = int(parts[0], 16).to_bytes(4, 'little')
    b = int(parts[1], 16).to_bytes(2, 'little')
    c = int(parts[2], 16).to_bytes(2, 'little')
    d = bytes.fromhex(parts[3] + parts[4])
    return a + b + c + d


REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))


def clang_format(text, name):
    """Formats like the rest of the tree (.clang-format), as if the file were
    src/codec/gen/NAME, so that the output does not depend on -o."""
    import shutil
    import subprocess
    exe = shutil.which('clang-format')
    if not exe:
        return text
    r = subprocess.run([exe, '--style=file', '--assume-filename=' +
                        os.path.join(REPO, 'src', 'codec', 'gen', name)],
                       input=text, capture_output=True, text=True, cwd=REPO)
    return r.stdout if r.returncode == 0 else text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('-o', '--outdir', required=True)
    ap.add_argument('--public', metavar='DIR',
                    help='write the public headers DIR/calls/NAME.h and DIR/calls.h '
                         '(include/mapiproxy)')
    ap.add_argument('idl', nargs='+')
    args = ap.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    pub = []
    for path in args.idl:
        prefix = os.path.splitext(os.path.basename(path))[0]
        src = open(path).read()
        try:
            ifcs = Parser(src).parse()
            if len(ifcs) != 1:
                raise IdlError('one interface per file')
            ph, h, c = Emitter(ifcs[0], prefix, path).gen()
        except IdlError as e:
            sys.exit('%s: %s' % (path, e))
        for ext, text in (('.h', h), ('.c', c)):
            with open(os.path.join(args.outdir, prefix + ext), 'w') as f:
                f.write(clang_format(text, prefix + ext))
        pub.append((prefix, ph))
    if args.public:
        os.makedirs(os.path.join(args.public, 'calls'), exist_ok=True)
        for prefix, ph in pub:
            with open(os.path.join(args.public, 'calls', prefix + '.h'), 'w') as f:
                f.write(clang_format(ph, prefix + '.h'))
        with open(os.path.join(args.public, 'calls.h'), 'w') as f:
            f.write(clang_format(umbrella(pub), 'calls.h'))


def umbrella(pub):
    """include/mapiproxy/calls.h: every interface's structures, and a digest
    of them that module.h folds into MP_MODULE_ABI_VERSION, so that a module
    built against other call structures does not load."""
    import hashlib
    dig = hashlib.sha256()
    for prefix, ph in sorted(pub):
        # the declarations only: comments and the file's name do not change the ABI
        body = re.sub(r'/\*.*?\*/', '', ph, flags=re.S)
        dig.update(prefix.encode() + b'\0' + ' '.join(body.split()).encode() + b'\0')
    lines = ['/* generated by tools/gen_codec.py from idl/NAME.idl -- do not edit',
             ' * Public: the decoded NSPI, EMSMDB, AsyncEMSMDB and RFR calls that',
             ' * mp_call_request()/mp_call_response() return (cast the void * to',
             ' * struct IFACE_OPNAME_in / _out). */',
             '#ifndef MAPIPROXY_CALLS_H', '#define MAPIPROXY_CALLS_H', '']
    lines += ['#include "calls/%s.h"' % prefix for prefix, _ in sorted(pub)]
    lines += ['', '/* A digest of the structures above (tools/gen_codec.py). */',
              '#define MP_CALLS_DIGEST 0x%su' % dig.hexdigest()[:6], '#endif', '']
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
