#!/usr/bin/python3
"""Generate the ROP codec (src/rop/gen/rop_gen.[ch]) from idl/rops/rops.idl.

    /usr/bin/python3 tools/gen_rops.py [--check] [IDL] [OUTDIR]

For every struct and every ROP request/response of the IDL it writes a C
struct, a pull function (packed little-endian cursor with sticky error), a
push function and a JSON print function, plus the table of ROP descriptors
indexed by RopId.  --check compares with the files on disk and fails if they
differ (make check-gen-rops).  The grammar is described at the top of the IDL
and in doc/internals/rop.md.
"""

import os
import re
import sys

SCALARS = {
    'u8': ('uint8_t', 'mp_rcur_u8', 'mp_wcur_u8', 1),
    'u16': ('uint16_t', 'mp_rcur_u16', 'mp_wcur_u16', 2),
    'u32': ('uint32_t', 'mp_rcur_u32', 'mp_wcur_u32', 4),
    'u64': ('uint64_t', 'mp_rcur_u64', 'mp_wcur_u64', 8),
    'i32': ('int32_t', 'mp_rcur_u32', 'mp_wcur_u32', 4),
    'i64': ('int64_t', 'mp_rcur_u64', 'mp_wcur_u64', 8),
}
SCALAR_UNSIGNED = {'i32': 'uint32_t', 'i64': 'uint64_t'}
# Types written by hand in src/rop/ropval.c and src/rop/notify.c, with the
# same pull/push/print signatures as generated structs.
HAND = {'tpropval': 'mp_rop_tpropval', 'notification': 'mp_rop_notification',
        'recipientrow': 'mp_rop_recipient_row'}


class IdlError(Exception):
    pass


class Field(object):
    def __init__(self, typ, name, count=None, arg=None, line=0):
        self.typ, self.name, self.count, self.arg, self.line = typ, name, count, arg, line


class If(object):
    def __init__(self):
        self.branches = []     # [(expr, [nodes])]
        self.other = None      # [nodes] or None


class Region(object):
    def __init__(self, name, opt):
        self.name, self.opt, self.body = name, opt, []


class Error(object):
    pass


class Columns(object):
    def __init__(self, tags, count):
        self.tags, self.count = tags, count


class Unit(object):
    """A struct, a ROP request or a ROP response."""

    def __init__(self, kind, name):
        self.kind = kind       # 'struct', 'req', 'rsp'
        self.name = name
        self.body = []
        self.sections = []     # rsp: [(conds, [nodes])]
        self.handle = None     # rsp: handle index field name, or None for raw
        self.recursive = False
        self.members = {}      # name -> C declaration pieces
        self.order = []
        self.conds = 0         # stored condition flags (__cN)


class Rop(object):
    def __init__(self, rid, name, flags):
        self.id, self.name, self.flags = rid, name, flags
        self.req = None
        self.rsp = None


def parse(text):
    structs, rops = [], []
    cur_rop = None
    stack = None      # list of node lists being filled
    unit = None
    ifstack = []
    lineno = 0

    def add(node):
        stack[-1].append(node)

    for raw in text.splitlines():
        lineno += 1
        line = raw.split('#', 1)[0].strip()
        if not line:
            continue
        w = line.split()
        kw = w[0]
        if kw == 'struct' and not ifstack:
            unit = Unit('struct', w[1])
            unit.recursive = 'recursive' in w[2:]
            structs.append(unit)
            stack = [unit.body]
            cur_rop = None
            continue
        if kw == 'rop':
            if ifstack:
                raise IdlError('line %d: unclosed block' % lineno)
            cur_rop = Rop(int(w[1], 16), w[2], set(w[3:]))
            rops.append(cur_rop)
            unit = None
            stack = None
            continue
        if kw == 'request':
            unit = Unit('req', cur_rop.name)
            cur_rop.req = unit
            stack = [unit.body]
            continue
        if kw == 'response':
            unit = Unit('rsp', cur_rop.name)
            unit.handle = None if w[1] == 'raw' else w[1]
            cur_rop.rsp = unit
            if unit.handle is None:
                stack = [unit.body]
            else:
                stack = None
            continue
        if kw == 'when':
            if unit is None or unit.kind != 'rsp' or unit.handle is None:
                raise IdlError('line %d: when outside a response' % lineno)
            body = []
            unit.sections.append((w[1:], body))
            stack = [body]
            continue
        if kw == 'end':
            if ifstack and ifstack[-1][1] == len(stack) - 1:
                ifstack.pop()
                stack.pop()
                continue
            if len(stack) > 1:
                stack.pop()
                continue
            if unit is not None and unit.kind == 'struct':
                unit = None
                stack = None
                continue
            raise IdlError('line %d: stray end' % lineno)
        if stack is None:
            raise IdlError('line %d: field outside a block: %s' % (lineno, line))
        if kw == 'if':
            node = If()
            body = []
            node.branches.append((line[3:].strip(), body))
            add(node)
            stack.append(body)
            ifstack.append((node, len(stack) - 1))
            continue
        if kw in ('elif', 'else'):
            node, depth = ifstack[-1]
            stack.pop()
            body = []
            if kw == 'elif':
                node.branches.append((line[5:].strip(), body))
            else:
                node.other = body
            stack.append(body)
            continue
        if kw == 'error':
            add(Error())
            continue
        if kw == 'columns':
            add(Columns(w[1], w[2]))
            continue
        if kw == 'size16':
            reg = Region(w[1], 'opt' in w[2:])
            add(reg)
            stack.append(reg.body)
            continue
        # a field: TYPE NAME[COUNT]
        m = re.match(r'^(\w+)(?:\(([\w.]+)\))?(?:<([^>]*)>)?\s+(\w+)(?:\[([\w*]+)\])?$', line)
        if not m:
            raise IdlError('line %d: cannot parse %r' % (lineno, line))
        typ, arg1, arg2, name, count = m.groups()
        add(Field(typ, name, count, arg1 if arg1 is not None else arg2, lineno))
    return structs, rops


# ---------------------------------------------------------------------------
class Gen(object):
    def __init__(self, structs, rops):
        self.structs = {s.name: s for s in structs}
        self.struct_list = structs
        self.rops = rops
        self.h = []
        self.c = []

    # -- C types --
    def ctype(self, f):
        t = f.typ
        if t in SCALARS:
            base = SCALARS[t][0]
        elif t == 'guid':
            return 'uint8_t %s[16]' % f.name if not f.count else 'uint8_t (*%s)[16]' % f.name
        elif t.startswith('fixed'):
            n = int(t[5:])
            return 'uint8_t %s[%d]' % (f.name, n)
        elif t in ('asciiz', 'utf16z', 'ustr'):
            base = 'struct mp_rop_str'
        elif t in ('bytes', 'text', 'wtext'):
            return 'const uint8_t *%s' % f.name
        elif t == 'rest':
            return 'struct mp_rop_bin %s' % f.name
        elif t == 'proprow':
            base = 'struct mp_rop_proprow'
        elif t in HAND:
            base = 'struct %s' % HAND[t]
        elif t in self.structs:
            base = 'struct mp_rop_%s' % t
        else:
            raise IdlError('line %d: unknown type %s' % (f.line, t))
        if f.count:
            return '%s *%s' % (base, f.name)
        return '%s %s' % (base, f.name)

    def collect(self, unit, nodes):
        for n in nodes:
            if isinstance(n, Field):
                decl = self.ctype(n)
                if n.name in unit.members:
                    if unit.members[n.name] != decl:
                        raise IdlError('line %d: %s redeclared with another type' %
                                       (n.line, n.name))
                    continue
                unit.members[n.name] = decl
                unit.order.append(n.name)
                if n.count == '*':
                    unit.members[n.name + '__n'] = 'uint32_t %s__n' % n.name
                    unit.order.append(n.name + '__n')
            elif isinstance(n, If):
                for _, b in n.branches:
                    self.collect(unit, b)
                if n.other:
                    self.collect(unit, n.other)
            elif isinstance(n, Region):
                for nm, decl in ((n.name, 'uint16_t %s' % n.name),
                                 (n.name + '__delta', 'int32_t %s__delta' % n.name)):
                    unit.members[nm] = decl
                    unit.order.append(nm)
                self.collect(unit, n.body)

    def members_of(self, unit):
        unit.members = {}
        unit.order = []
        if unit.kind == 'req':
            for nm in ('RopId', 'LogonId'):
                unit.members[nm] = 'uint8_t %s' % nm
                unit.order.append(nm)
        elif unit.kind == 'rsp':
            unit.members['RopId'] = 'uint8_t RopId'
            unit.order.append('RopId')
            if unit.handle:
                unit.members[unit.handle] = 'uint8_t %s' % unit.handle
                unit.members['ReturnValue'] = 'uint32_t ReturnValue'
                unit.order += [unit.handle, 'ReturnValue']
        if unit.kind == 'rsp' and unit.handle:
            for _, body in unit.sections:
                self.collect(unit, body)
        else:
            self.collect(unit, unit.body)

    # -- expressions --
    def expr(self, unit, e, ctx):
        """C for an IDL expression; ctx['stored'] set if it needs req/context."""
        out = []
        for tok in re.findall(r'req\.\w+|0x[0-9A-Fa-f]+|\d+|\w+|==|!=|<=|>=|&&|\|\||[()&|<>!,]', e):
            if tok == 'and':
                out.append('&&')
            elif tok == 'or':
                out.append('||')
            elif tok == 'not':
                out.append('!')
            elif tok == 'rv':
                out.append('r->ReturnValue')
            elif tok.startswith('req.'):
                ctx['req'] = True
                out.append('req->' + tok[4:])
            elif tok == 'private':
                ctx['ctx'] = True
                out.append('mp_rop_logon_private')
            elif tok == '(' and out and out[-1] == 'mp_rop_logon_private':
                out[-1] = 'mp_rop_logon_private(c, pc,'
            elif re.match(r'^(0x[0-9A-Fa-f]+|\d+)$', tok):
                out.append(tok)
            elif re.match(r'^\w+$', tok):
                if tok not in unit.members:
                    raise IdlError('%s: unknown field %s in %r' % (unit.name, tok, e))
                out.append('r->' + tok)
            else:
                out.append(tok)
        s = ' '.join(out)
        return s

    def count_expr(self, unit, f):
        if f.count == '*':
            return 'r->%s__n' % f.name
        if re.match(r'^\d+$', f.count):
            return f.count
        if f.count not in unit.members:
            raise IdlError('line %d: unknown count field %s' % (f.line, f.count))
        return '(size_t)r->%s' % f.count

    # -- pull --
    def pull_one(self, unit, f, lv, ind, end=None):
        """Statements reading one element into lvalue lv."""
        t = f.typ
        o = []
        if t in SCALARS:
            ct, fn = SCALARS[t][0], SCALARS[t][1]
            if t in SCALAR_UNSIGNED:
                o.append('%s%s = (%s)%s(c);' % (ind, lv, ct, fn))
            else:
                o.append('%s%s = %s(c);' % (ind, lv, fn))
        elif t == 'guid' or t.startswith('fixed'):
            n = 16 if t == 'guid' else int(t[5:])
            o.append('%s{ const uint8_t *q_ = mp_rcur_bytes(c, %d); if (q_) memcpy(%s, q_, %d); }'
                     % (ind, n, lv, n))
        elif t == 'asciiz':
            o.append('%smp_rop_pull_str(c, &%s, false);' % (ind, lv))
        elif t == 'utf16z':
            o.append('%smp_rop_pull_str(c, &%s, true);' % (ind, lv))
        elif t == 'ustr':
            o.append('%smp_rop_pull_str(c, &%s, r->%s != 0);' % (ind, lv, f.arg))
        elif t == 'proprow':
            o += self.pull_proprow(unit, f, lv, ind)
        elif t in HAND:
            o.append('%s%s_pull(c, pc, &%s);' % (ind, HAND[t], lv))
        elif t in self.structs:
            o.append('%smp_rop_pull_%s(c, pc, &%s);' % (ind, t, lv))
        else:
            raise IdlError('line %d: cannot pull %s' % (f.line, t))
        return o

    def pull_proprow(self, unit, f, lv, ind):
        src = f.arg or ''
        if src == 'table':
            return ['%smp_rop_pull_proprow(c, pc, &%s, cols_, ncols_);' % (ind, lv)]
        if src.startswith('fixed:'):
            return ['%smp_rop_pull_proprow(c, pc, &%s, mp_rop_cols_%s, '
                    'MP_ROP_NCOLS_%s);' % (ind, lv, src[6:], src[6:].upper())]
        if src.startswith('req.'):
            tags, cnt = src.split(',')
            return ['%sif (!req) { mp_rop_need_ctx(c, pc); return; }' % ind,
                    '%smp_rop_pull_proprow(c, pc, &%s, req->%s, req->%s);'
                    % (ind, lv, tags[4:], cnt.strip()[4:])]
        raise IdlError('line %d: bad proprow source %r' % (f.line, src))

    def uses_table(self, nodes):
        for n in nodes:
            if isinstance(n, Field) and n.typ == 'proprow' and n.arg == 'table':
                return True
            if isinstance(n, If):
                if any(self.uses_table(b) for _, b in n.branches) or \
                        (n.other and self.uses_table(n.other)):
                    return True
            if isinstance(n, Region) and self.uses_table(n.body):
                return True
        return False

    def pull_nodes(self, unit, nodes, ind, region_end=None):
        o = []
        for n in nodes:
            if isinstance(n, Field):
                if n.typ == 'proprow' and n.arg == 'table':
                    o.append('%sif (!mp_rop_table_columns(c, pc, r->%s, &cols_, &ncols_)) return;'
                             % (ind, unit.handle or 'InputHandleIndex'))
                if n.typ == 'rest':
                    o.append('%sr->%s.n = (uint32_t)mp_rcur_left(c);' % (ind, n.name))
                    o.append('%sr->%s.p = mp_rcur_bytes(c, r->%s.n);' % (ind, n.name, n.name))
                elif n.count is None:
                    o += self.pull_one(unit, n, 'r->' + n.name, ind)
                elif n.typ in ('bytes', 'text', 'wtext'):
                    o.append('%sr->%s = mp_rcur_bytes(c, %s);' % (ind, n.name,
                                                                 self.count_expr(unit, n)))
                elif n.typ == 'rest':
                    raise IdlError('rest takes no count')
                elif n.count == '*':
                    if region_end is None:
                        raise IdlError('line %d: [*] outside a region' % n.line)
                    el = self.ctype(Field(n.typ, 'x')).rsplit(' ', 1)[0].replace(' *', '')
                    o.append('%s{' % ind)
                    o.append('%s    size_t cap_ = 0;' % ind)
                    o.append('%s    r->%s__n = 0;' % (ind, n.name))
                    o.append('%s    while (!c->err && c->off < %s) {' % (ind, region_end))
                    o.append('%s        if (r->%s__n == cap_) {' % (ind, n.name))
                    o.append('%s            cap_ = cap_ ? cap_ * 2 : 8;' % ind)
                    o.append('%s            %s *n_ = mp_arena_calloc(pc->arena, cap_, sizeof(*n_));'
                             % (ind, el))
                    o.append('%s            if (!n_) { mp_rop_nomem(c, pc); return; }' % ind)
                    o.append('%s            if (r->%s__n) memcpy(n_, r->%s, r->%s__n * sizeof(*n_));'
                             % (ind, n.name, n.name, n.name))
                    o.append('%s            r->%s = n_;' % (ind, n.name))
                    o.append('%s        }' % ind)
                    o += self.pull_one(unit, n, 'r->%s[r->%s__n++]' % (n.name, n.name),
                                       ind + '        ')
                    o.append('%s    }' % ind)
                    o.append('%s}' % ind)
                else:
                    cnt = self.count_expr(unit, n)
                    o.append('%s{' % ind)
                    o.append('%s    size_t n_ = %s;' % (ind, cnt))
                    o.append('%s    if (n_ > mp_rcur_left(c)) { c->err = true; return; }' % ind)
                    o.append('%s    r->%s = mp_arena_calloc(pc->arena, n_ ? n_ : 1, sizeof(*r->%s));'
                             % (ind, n.name, n.name))
                    o.append('%s    if (!r->%s) { mp_rop_nomem(c, pc); return; }' % (ind, n.name))
                    o.append('%s    for (size_t i_ = 0; i_ < n_ && !c->err; i_++) {' % ind)
                    o += self.pull_one(unit, n, 'r->%s[i_]' % n.name, ind + '        ')
                    o.append('%s    }' % ind)
                    o.append('%s}' % ind)
                o.append('%sif (c->err) return;' % ind)
            elif isinstance(n, If):
                first = True
                for e, body in n.branches:
                    ctx = {}
                    ce = self.expr(unit, e, ctx)
                    if ctx:
                        k = unit.conds
                        unit.conds += 1
                        o.append('%sr->c__%d = (%s) ? 1 : 0;' % (ind, k, ce))
                        if 'req' in ctx:
                            o.insert(len(o) - 1, '%sif (!req) { mp_rop_need_ctx(c, pc); return; }'
                                     % ind)
                        o.append('%sif (c->err) return;' % ind)
                        ce = 'r->c__%d' % k
                        n.stored = getattr(n, 'stored', {})
                        n.stored[e] = ce
                    o.append('%s%sif (%s) {' % (ind, '' if first else '} else ', ce))
                    o += self.pull_nodes(unit, body, ind + '    ', region_end)
                    first = False
                if n.other is not None:
                    o.append('%s} else {' % ind)
                    o += self.pull_nodes(unit, n.other, ind + '    ', region_end)
                o.append('%s}' % ind)
            elif isinstance(n, Error):
                o.append('%sc->err = true;' % ind)
                o.append('%sreturn;' % ind)
            elif isinstance(n, Columns):
                o.append('%spc->recip_cols = r->%s;' % (ind, n.tags))
                o.append('%spc->recip_ncols = r->%s;' % (ind, n.count))
            elif isinstance(n, Region):
                o.append('%sr->%s = mp_rcur_u16(c);' % (ind, n.name))
                o.append('%s{' % ind)
                o.append('%s    size_t %s__start = c->off;' % (ind, n.name))
                inner = ind + '    '
                if n.opt:
                    o.append('%s    if (r->%s) {' % (ind, n.name))
                    inner += '    '
                o += self.pull_nodes(unit, n.body, inner,
                                     '%s__start + r->%s' % (n.name, n.name))
                o.append('%sr->%s__delta = (int32_t)r->%s - (int32_t)(c->off - %s__start);'
                         % (inner, n.name, n.name, n.name))
                if n.opt:
                    o.append('%s    }' % ind)
                o.append('%s}' % ind)
        return o

    def cond_c(self, unit, n, e):
        """The C condition of an If branch for push/print (stored ones use c__N)."""
        st = getattr(n, 'stored', {})
        if e in st:
            return st[e]
        return self.expr(unit, e, {})

    # -- push --
    def push_one(self, unit, f, rv, ind):
        t = f.typ
        if t in SCALARS:
            fn = SCALARS[t][2]
            if t in SCALAR_UNSIGNED:
                return ['%s%s(w, (%s)%s);' % (ind, fn, SCALAR_UNSIGNED[t], rv)]
            return ['%s%s(w, %s);' % (ind, fn, rv)]
        if t == 'guid' or t.startswith('fixed'):
            n = 16 if t == 'guid' else int(t[5:])
            return ['%smp_wcur_bytes(w, %s, %d);' % (ind, rv, n)]
        if t in ('asciiz', 'utf16z', 'ustr'):
            return ['%smp_rop_push_str(w, &%s);' % (ind, rv)]
        if t == 'proprow':
            return ['%smp_rop_push_proprow(w, &%s);' % (ind, rv)]
        if t in HAND:
            return ['%s%s_push(w, &%s);' % (ind, HAND[t], rv)]
        if t in self.structs:
            return ['%smp_rop_push_%s(w, &%s);' % (ind, t, rv)]
        raise IdlError('cannot push %s' % t)

    def push_nodes(self, unit, nodes, ind):
        o = []
        for n in nodes:
            if isinstance(n, Field):
                if n.typ == 'rest':
                    o.append('%smp_wcur_bytes(w, r->%s.p, r->%s.n);' % (ind, n.name, n.name))
                elif n.count is None:
                    o += self.push_one(unit, n, 'r->' + n.name, ind)
                elif n.typ in ('bytes', 'text', 'wtext'):
                    o.append('%smp_wcur_bytes(w, r->%s, %s);' % (ind, n.name,
                                                               self.count_expr(unit, n)))
                else:
                    o.append('%sif (r->%s)' % (ind, n.name))
                    o.append('%s    for (size_t i_ = 0; i_ < %s; i_++) {' %
                             (ind, self.count_expr(unit, n)))
                    o += self.push_one(unit, n, 'r->%s[i_]' % n.name, ind + '        ')
                    o.append('%s    }' % ind)
            elif isinstance(n, If):
                first = True
                for e, body in n.branches:
                    o.append('%s%sif (%s) {' % (ind, '' if first else '} else ',
                                                self.cond_c(unit, n, e)))
                    o += self.push_nodes(unit, body, ind + '    ')
                    first = False
                if n.other is not None:
                    o.append('%s} else {' % ind)
                    o += self.push_nodes(unit, n.other, ind + '    ')
                o.append('%s}' % ind)
            elif isinstance(n, Error):
                o.append('%sw->err = true;' % ind)
            elif isinstance(n, Region):
                o.append('%s{' % ind)
                o.append('%s    size_t at_ = mp_wcur_pos(w);' % ind)
                o.append('%s    mp_wcur_u16(w, r->%s);' % (ind, n.name))
                inner = ind + '    '
                if n.opt:
                    o.append('%s    if (r->%s) {' % (ind, n.name))
                    inner += '    '
                o.append('%ssize_t start_ = mp_wcur_pos(w);' % inner)
                o += self.push_nodes(unit, n.body, inner)
                o.append('%smp_wcur_patch_u16(w, at_, (uint16_t)((int32_t)(mp_wcur_pos(w) - '
                         'start_) + r->%s__delta));' % (inner, n.name))
                if n.opt:
                    o.append('%s    }' % ind)
                o.append('%s}' % ind)
        return o

    # -- print --
    def is_hex_name(self, name):
        return (('Tag' in name or 'Columns' in name) and 'Count' not in name) or name in (
            'ReturnValue', 'ErrorCode', 'Mask', 'OpenFlags', 'StoreState')

    def print_one(self, unit, f, rv, ind):
        t = f.typ
        if t in SCALARS:
            if self.is_hex_name(f.name):
                return ['%smp_rj_hex(j, %s, %d);' % (ind, rv, 2 * SCALARS[t][3])]
            if t.startswith('i'):
                return ['%smp_rj_i64(j, %s);' % (ind, rv)]
            return ['%smp_rj_u64(j, %s);' % (ind, rv)]
        if t == 'guid':
            return ['%smp_rj_guid(j, %s);' % (ind, rv)]
        if t.startswith('fixed'):
            return ['%smp_rj_bin(j, %s, %d, 0);' % (ind, rv, int(t[5:]))]
        if t in ('asciiz', 'utf16z', 'ustr'):
            return ['%smp_rop_print_str(j, &%s);' % (ind, rv)]
        if t == 'proprow':
            return ['%smp_rop_print_proprow(j, &%s);' % (ind, rv)]
        if t in HAND:
            return ['%s%s_print(j, &%s);' % (ind, HAND[t], rv)]
        if t in self.structs:
            return ['%smp_rop_print_%s(j, &%s);' % (ind, t, rv)]
        raise IdlError('cannot print %s' % t)

    def print_nodes(self, unit, nodes, ind):
        o = []
        for n in nodes:
            if isinstance(n, Field):
                o.append('%smp_rj_key(j, "%s");' % (ind, n.name))
                if n.typ == 'rest':
                    o.append('%smp_rj_bin(j, r->%s.p, r->%s.n, MP_ROP_PRINT_MAXBIN);'
                             % (ind, n.name, n.name))
                elif n.count is None:
                    o += self.print_one(unit, n, 'r->' + n.name, ind)
                elif n.typ == 'bytes':
                    o.append('%smp_rj_bin(j, r->%s, %s, MP_ROP_PRINT_MAXBIN);'
                             % (ind, n.name, self.count_expr(unit, n)))
                elif n.typ == 'text':
                    o.append('%smp_rop_print_text(j, r->%s, %s, false);'
                             % (ind, n.name, self.count_expr(unit, n)))
                elif n.typ == 'wtext':
                    o.append('%smp_rop_print_text(j, r->%s, %s, true);'
                             % (ind, n.name, self.count_expr(unit, n)))
                else:
                    o.append('%smp_rj_arr(j);' % ind)
                    o.append('%sif (r->%s)' % (ind, n.name))
                    o.append('%s    for (size_t i_ = 0; i_ < %s; i_++) {' %
                             (ind, self.count_expr(unit, n)))
                    o += self.print_one(unit, n, 'r->%s[i_]' % n.name, ind + '        ')
                    o.append('%s    }' % ind)
                    o.append('%smp_rj_arr_end(j);' % ind)
            elif isinstance(n, If):
                first = True
                for e, body in n.branches:
                    o.append('%s%sif (%s) {' % (ind, '' if first else '} else ',
                                                self.cond_c(unit, n, e)))
                    o += self.print_nodes(unit, body, ind + '    ')
                    first = False
                if n.other is not None:
                    o.append('%s} else {' % ind)
                    o += self.print_nodes(unit, n.other, ind + '    ')
                o.append('%s}' % ind)
            elif isinstance(n, Region):
                o.append('%smp_rj_key(j, "%s");' % (ind, n.name))
                o.append('%smp_rj_u64(j, r->%s);' % (ind, n.name))
                if n.opt:
                    o.append('%sif (r->%s) {' % (ind, n.name))
                    o += self.print_nodes(unit, n.body, ind + '    ')
                    o.append('%s}' % ind)
                else:
                    o += self.print_nodes(unit, n.body, ind)
        return o

    # -- sections of responses --
    def section_cond(self, conds):
        parts = []
        for cd in conds:
            if cd == 'ok':
                parts.append('r->ReturnValue == 0')
            elif cd == 'fail':
                parts.append('r->ReturnValue != 0')
            elif cd == 'any':
                parts.append('1')
            else:
                parts.append('r->ReturnValue == %s' % cd)
        return ' || '.join(parts)

    @staticmethod
    def header_only_alt(unit):
        """A response that declares fields for failures too (`when any` /
        `when fail`: DataSize, WrittenSize, PartialCompletion,
        TransferStatus...) also decodes a failure sent as the header alone,
        MS-OXCROPS' general form of a failure and what gromox sends.  Which
        form came is decided at pull time (mp_rop_header_only) and kept in
        HeaderOnly, so that push and print give back the same bytes."""
        return unit.kind == 'rsp' and unit.handle and any(
            'any' in conds or 'fail' in conds for conds, _ in unit.sections)

    def unit_body(self, unit, what):
        """Body statements of pull/push/print for the unit (after the header)."""
        fn = {'pull': self.pull_nodes, 'push': self.push_nodes, 'print': self.print_nodes}[what]
        if unit.kind == 'rsp' and unit.handle:
            o = []
            first = True
            if self.header_only_alt(unit):
                if what == 'pull':
                    o.append('    r->HeaderOnly = r->ReturnValue != 0 && mp_rop_header_only(c, pc);')
                o.append('    if (r->HeaderOnly) {')
                if what == 'print':
                    o.append('        mp_rj_key(j, "HeaderOnly");')
                    o.append('        mp_rj_bool(j, true);')
                else:
                    o.append('        /* a failure sent as the header alone */')
                first = False
            for conds, body in unit.sections:
                o.append('    %sif (%s) {' % ('' if first else '} else ', self.section_cond(conds)))
                o += fn(unit, body, '        ')
                first = False
            if not first:
                o.append('    }')
            return o
        return fn(unit, unit.body, '    ')

    def cname(self, unit):
        if unit.kind == 'struct':
            return 'mp_rop_%s' % unit.name
        return 'mp_rop_%s_%s' % (unit.kind, unit.name)

    def emit_struct(self, unit):
        self.members_of(unit)
        # condition flags are known only after generating pull: do it now
        unit.conds = 0
        unit._pull = self.unit_body(unit, 'pull')
        h = ['struct %s {' % self.cname(unit)]
        for nm in unit.order:
            h.append('    %s;' % unit.members[nm])
        for k in range(unit.conds):
            h.append('    uint8_t c__%d; /* condition evaluated with context at pull time */' % k)
        if self.header_only_alt(unit):
            h.append('    uint8_t HeaderOnly; /* a failure sent as the header alone */')
        h.append('};')
        return h

    def emit_funcs(self, unit):
        cn = self.cname(unit)
        o = []
        if unit.kind == 'rsp':
            req = 'const struct mp_rop_req_%s *req' % unit.name if self.has_req(unit) \
                else 'const void *req'
            o.append('static void pull_%s(struct mp_rcur *c, struct mp_rop_pctx *pc, '
                     'struct %s *r, %s)' % (cn, cn, req))
        elif unit.kind == 'req':
            o.append('static void pull_%s(struct mp_rcur *c, struct mp_rop_pctx *pc, '
                     'struct %s *r)' % (cn, cn))
        else:
            o.append('void mp_rop_pull_%s(struct mp_rcur *c, struct mp_rop_pctx *pc, '
                     'struct %s *r)' % (unit.name, cn))
        o.append('{')
        if unit.kind == 'rsp' and not self.uses_req(unit):
            o.append('    (void)req;')
        if unit.kind != 'struct' and self.uses_table(self.all_nodes(unit)):
            o.append('    const uint32_t *cols_ = NULL;')
            o.append('    size_t ncols_ = 0;')
        if unit.recursive:
            o.append('    if (++pc->depth > MP_ROP_MAX_DEPTH) { c->err = true; pc->depth--; return; }')
        if unit.kind == 'req':
            o.append('    r->RopId = mp_rcur_u8(c);')
            o.append('    r->LogonId = mp_rcur_u8(c);')
        elif unit.kind == 'rsp':
            o.append('    r->RopId = mp_rcur_u8(c);')
            if unit.handle:
                o.append('    r->%s = mp_rcur_u8(c);' % unit.handle)
                o.append('    r->ReturnValue = mp_rcur_u32(c);')
            o.append('    if (c->err) return;')
        body = unit._pull
        if unit.recursive:
            # every early return must undo the depth count: wrap in a helper
            o.append('    pull_body_%s(c, pc, r);' % cn)
            o.append('    pc->depth--;')
            o.append('}')
            helper = ['static void pull_body_%s(struct mp_rcur *c, struct mp_rop_pctx *pc, '
                      'struct %s *r)' % (cn, cn), '{'] + body + ['}', '']
            o = helper + o
        else:
            o += body
            o.append('}')
        o.append('')
        # push
        if unit.kind == 'struct':
            o.append('void mp_rop_push_%s(struct mp_wcur *w, const struct %s *r)' % (unit.name, cn))
        else:
            o.append('static void push_%s(struct mp_wcur *w, const struct %s *r)' % (cn, cn))
        o.append('{')
        if unit.kind == 'req':
            o.append('    mp_wcur_u8(w, r->RopId);')
            o.append('    mp_wcur_u8(w, r->LogonId);')
        elif unit.kind == 'rsp':
            o.append('    mp_wcur_u8(w, r->RopId);')
            if unit.handle:
                o.append('    mp_wcur_u8(w, r->%s);' % unit.handle)
                o.append('    mp_wcur_u32(w, r->ReturnValue);')
        o += self.unit_body(unit, 'push')
        o.append('}')
        o.append('')
        # print
        if unit.kind == 'struct':
            o.append('void mp_rop_print_%s(struct mp_json *j, const struct %s *r)' % (unit.name, cn))
        else:
            o.append('static void print_%s(struct mp_json *j, const struct %s *r)' % (cn, cn))
        o.append('{')
        if unit.kind == 'struct':
            o.append('    mp_rj_obj(j);')
        if unit.kind == 'req':
            o.append('    mp_rj_key(j, "LogonId");')
            o.append('    mp_rj_u64(j, r->LogonId);')
        elif unit.kind == 'rsp' and unit.handle:
            o.append('    mp_rj_key(j, "%s");' % unit.handle)
            o.append('    mp_rj_u64(j, r->%s);' % unit.handle)
            o.append('    mp_rj_key(j, "ReturnValue");')
            o.append('    mp_rj_hex(j, r->ReturnValue, 8);')
        o += self.unit_body(unit, 'print')
        if unit.kind == 'struct':
            o.append('    mp_rj_obj_end(j);')
        o.append('}')
        o.append('')
        return o

    def all_nodes(self, unit):
        if unit.kind == 'rsp' and unit.handle:
            out = []
            for _, b in unit.sections:
                out += b
            return out
        return unit.body

    def uses_req(self, unit):
        return any('req' in l for l in unit._pull if 'req->' in l or '!req' in l)

    def has_req(self, unit):
        rop = [r for r in self.rops if r.rsp is unit]
        return bool(rop and rop[0].req is not None)

    # -- struct ordering: dependencies first --
    def ordered_structs(self):
        done, out = set(), []

        def deps(u, nodes, acc):
            for n in nodes:
                if isinstance(n, Field) and n.typ in self.structs and n.count is None:
                    acc.add(n.typ)
                elif isinstance(n, If):
                    for _, b in n.branches:
                        deps(u, b, acc)
                    if n.other:
                        deps(u, n.other, acc)
                elif isinstance(n, Region):
                    deps(u, n.body, acc)
            return acc

        def visit(s):
            if s.name in done:
                return
            done.add(s.name)
            for d in sorted(deps(s, s.body, set())):
                if d != s.name:
                    visit(self.structs[d])
            out.append(s)
        for s in self.struct_list:
            visit(s)
        return out

    def run(self, idl_name):
        hdr = ['/* Generated by tools/gen_rops.py from %s: do not edit. */' % idl_name]
        # the public header (include/mapiproxy/rops.h): the structures, the
        # RopIds and a digest of them; the internal one (rop_gen.h): the
        # pull/push/print functions
        p = ['/* Generated by tools/gen_rops.py from %s: do not edit.' % idl_name,
             ' *',
             ' * mapiproxy module API: the decoded ROP structures that mp_call_rop()',
             ' * returns (struct mp_rop_req_NAME, struct mp_rop_rsp_NAME, MP_ROP_NAME',
             ' * ids).  Strings and blobs point into the call\'s buffers; to change one,',
             ' * point it at memory from mp_call_alloc() and set its count field, then',
             ' * call mp_call_rop_changed().  Stands alone: -I<prefix>/include is',
             ' * enough.  The c__N members record how a condition of the IDL evaluated',
             ' * at decode time (re-encoding needs them): read, do not change. */',
             '#ifndef MAPIPROXY_ROPS_H', '#define MAPIPROXY_ROPS_H', '#include <stdint.h>', '',
             '#include "ropvals.h"', '']
        h = hdr + ['#ifndef MP_ROP_GEN_H', '#define MP_ROP_GEN_H', '#include <stdint.h>', '',
                   '#include "mapiproxy/rops.h"', '#include "rop/ropval.h"', '']
        structs = self.ordered_structs()
        for s in self.struct_list:
            p.append('struct mp_rop_%s;' % s.name)
        p.append('')
        for s in structs:
            p += self.emit_struct(s)
            p.append('')
            h.append('void mp_rop_pull_%s(struct mp_rcur *c, struct mp_rop_pctx *pc, '
                     'struct mp_rop_%s *r);' % (s.name, s.name))
            h.append('void mp_rop_push_%s(struct mp_wcur *w, const struct mp_rop_%s *r);'
                     % (s.name, s.name))
            h.append('void mp_rop_print_%s(struct mp_json *j, const struct mp_rop_%s *r);'
                     % (s.name, s.name))
            h.append('')
        p.append('enum mp_rop_id {')
        for r in self.rops:
            p.append('    MP_ROP_%s = 0x%02X,' % (r.name, r.id))
        p.append('};')
        p.append('#define MP_ROP_COUNT %d' % len(self.rops))
        p.append('')
        for r in self.rops:
            for u in (r.req, r.rsp):
                if u is not None:
                    p += self.emit_struct(u)
            p.append('')
        import hashlib
        body = re.sub(r'/\*.*?\*/', '', '\n'.join(p[10:]), flags=re.S)
        dig = hashlib.sha256(' '.join(body.split()).encode()).hexdigest()[:6]
        p += ['/* A digest of the structures above, folded into MP_MODULE_ABI_VERSION. */',
              '#define MP_ROPS_DIGEST 0x%su' % dig, '#endif']
        h.append('#endif')
        self.public = '\n'.join(p) + '\n'
        c = hdr + ['#include "rop/gen/rop_gen.h"', '', '#include <stdbool.h>',
                   '#include <string.h>', '', '#include "rop/rop.h"', '#include "rop/ropjson.h"', '']
        for s in structs:
            c += self.emit_funcs(s)
        for r in self.rops:
            for u in (r.req, r.rsp):
                if u is not None:
                    c += self.emit_funcs(u)
        # wrappers and descriptors
        for r in self.rops:
            for u in (r.req, r.rsp):
                if u is None:
                    continue
                cn = self.cname(u)
                if u.kind == 'req':
                    c.append('static void vpull_%s(struct mp_rcur *c, struct mp_rop_pctx *pc, '
                             'void *r, const void *req)' % cn)
                    c.append('{')
                    c.append('    (void)req;')
                    c.append('    pull_%s(c, pc, r);' % cn)
                    c.append('}')
                else:
                    c.append('static void vpull_%s(struct mp_rcur *c, struct mp_rop_pctx *pc, '
                             'void *r, const void *req)' % cn)
                    c.append('{')
                    c.append('    pull_%s(c, pc, r, req);' % cn)
                    c.append('}')
                c.append('static void vpush_%s(struct mp_wcur *w, const void *r)' % cn)
                c.append('{')
                c.append('    push_%s(w, r);' % cn)
                c.append('}')
                c.append('static void vprint_%s(struct mp_json *j, const void *r)' % cn)
                c.append('{')
                c.append('    print_%s(j, r);' % cn)
                c.append('}')
        c.append('')
        for r in self.rops:
            fl = []
            if 'noresponse' in r.flags:
                fl.append('MP_ROPD_NORESPONSE')
            if 'responseonly' in r.flags:
                fl.append('MP_ROPD_RESPONSEONLY')
            c.append('static const struct mp_rop_desc d_%s = {' % r.name)
            c.append('    .id = 0x%02X,' % r.id)
            c.append('    .name = "Rop%s",' % r.name)
            c.append('    .flags = %s,' % (' | '.join(fl) if fl else '0'))
            # where the handle indexes are in the request struct (-1: none),
            # and which request field the response's index field echoes
            rq = self.cname(r.req) if r.req is not None else None
            for k, f in (('in_hidx', 'InputHandleIndex'), ('out_hidx', 'OutputHandleIndex')):
                if rq and f in r.req.members:
                    c.append('    .%s = (int16_t)offsetof(struct %s, %s),' % (k, rq, f))
                else:
                    c.append('    .%s = -1,' % k)
            if rq and r.rsp is not None and r.rsp.handle and r.rsp.handle in r.req.members:
                c.append('    .rsp_hidx = (int16_t)offsetof(struct %s, %s),' % (rq, r.rsp.handle))
            else:
                c.append('    .rsp_hidx = -1,')
            for u, k in ((r.req, 'req'), (r.rsp, 'rsp')):
                if u is None:
                    continue
                cn = self.cname(u)
                c.append('    .%s_size = sizeof(struct %s),' % (k, cn))
                c.append('    .pull_%s = vpull_%s,' % (k, cn))
                c.append('    .push_%s = vpush_%s,' % (k, cn))
                c.append('    .print_%s = vprint_%s,' % (k, cn))
            c.append('};')
        c.append('')
        c.append('const struct mp_rop_desc *const mp_rop_descs[256] = {')
        for r in self.rops:
            c.append('    [0x%02X] = &d_%s,' % (r.id, r.name))
        c.append('};')
        h.insert(-1, '')
        return '\n'.join(h) + '\n', '\n'.join(c) + '\n'


def clang_format(text, path):
    """Format like the rest of the tree (.clang-format) so that make
    check-format passes on the generated files; unchanged if clang-format is
    missing (then check-gen-rops may report them stale)."""
    import shutil
    import subprocess
    exe = shutil.which('clang-format')
    if not exe:
        return text
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([exe, '--style=file', '--assume-filename=' + path], input=text,
                       capture_output=True, text=True, cwd=root)
    return r.stdout if r.returncode == 0 else text


def main(argv):
    check = '--check' in argv
    args = [a for a in argv if a != '--check']
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    idl = args[0] if args else os.path.join(root, 'idl', 'rops', 'rops.idl')
    outdir = args[1] if len(args) > 1 else os.path.join(root, 'src', 'rop', 'gen')
    with open(idl) as f:
        structs, rops = parse(f.read())
    ids = [r.id for r in rops]
    if len(set(ids)) != len(ids):
        raise IdlError('duplicate RopId')
    g = Gen(structs, rops)
    pubdir = args[2] if len(args) > 2 else os.path.join(root, 'include', 'mapiproxy')
    h, c = g.run('idl/rops/rops.idl')
    outs = {os.path.join(outdir, 'rop_gen.h'): clang_format(h, os.path.join(outdir, 'rop_gen.h')),
            os.path.join(outdir, 'rop_gen.c'): clang_format(c, os.path.join(outdir, 'rop_gen.c')),
            os.path.join(pubdir, 'rops.h'): clang_format(g.public, os.path.join(pubdir, 'rops.h'))}
    bad = 0
    for path, text in outs.items():
        if check:
            try:
                with open(path) as f:
                    if f.read() != text:
                        print('%s is stale: run make gen-rops' % path)
                        bad = 1
            except OSError:
                print('%s is missing: run make gen-rops' % path)
                bad = 1
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'w') as f:
                f.write(text)
    return bad


if __name__ == '__main__':
    try:
        sys.exit(main(sys.argv[1:]))
    except IdlError as e:
        print('gen_rops: %s' % e, file=sys.stderr)
        sys.exit(2)
