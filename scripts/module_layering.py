#!/usr/bin/env python3
"""Prints each crate's modules, lowest layer first, with their direct uses within the
crate and their first doc sentence: the "Module layering" list of docs/ARCHITECTURE.md."""
import os,re,sys,glob
root=os.path.join(os.path.dirname(os.path.abspath(__file__)),'..')
members=re.search(r'members = \[(.*?)\]',open(root+'/Cargo.toml').read()).group(1).replace('"','').split(', ')
def mods(src):
    out={}
    for dp,dn,fn in os.walk(src):
        for f in fn:
            if f.endswith('.rs'):
                p=os.path.join(dp,f); rel=os.path.relpath(p,src).split('/')
                last=rel.pop()[:-3]
                if last not in ('mod','lib','main'): rel.append(last)
                out[tuple(rel)]=p
    return out
def code(t):
    lines=t.split('\n'); o=[]
    for i,l in enumerate(lines):
        if l.strip()=='#[cfg(test)]' and i+1<len(lines) and lines[i+1].lstrip().startswith('mod tests'): break
        o.append(l.split('//')[0])
    return '\n'.join(o)
for m in members:
    src=f'{root}/{m}/src'
    ms=mods(src)
    top={}
    for k,p in ms.items():
        if not k: continue
        t=code(open(p).read())
        deps=set()
        for x in re.findall(r'(?<![\w:])crate::(?:\{([^}]*)\}|(\w+))',t):
            names=[x[1]] if x[1] else [s.strip().split('::')[0] for s in x[0].split(',')]
            for n in names:
                if (n,) in ms and n!=k[0]: deps.add(n)
        top.setdefault(k[0],set()).update(deps)
    # doc first line
    def doc(n):
        p=ms.get((n,))
        if not p: return ''
        text=[]
        for l in open(p):
            if l.startswith('//!'):
                t=l[3:].strip()
                if not t and text: break
                text.append(t)
            elif text: break
        t=' '.join(text)
        import re as _re
        m=_re.search(r'^(.*?[.])(\s|$)',t)
        return (m.group(1) if m else t).rstrip('.:;')+'.'
    order=[];seen=set()
    def visit(n):
        if n in seen: return
        seen.add(n)
        for d in sorted(top.get(n,())): visit(d)
        order.append(n)
    for n in sorted(top): visit(n)
    if not order:
        print(f'\n**`{m}/`**: one module (its lib.rs).')
        continue
    print(f'\n**`{m}/`**\n')
    for n in order:
        deps=sorted(top.get(n,()))
        print(f'- `{n}`: {doc(n)}' + (f' (uses {", ".join(deps)})' if deps else ''))
