#!/usr/bin/env python3
"""Fails when a module of a crate imports another module that (directly or
through others) imports it back. A module is a top-level file or folder
under src/; `crate::m` and `super::m` references from inside a folder's
files count for the folder's module."""
import os, re, sys

def top_module(src, path):
    rel = os.path.relpath(path, src)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith('.rs') else first

def crate_graph(src):
    graph = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'):
                continue
            path = os.path.join(root, f)
            me = top_module(src, path)
            if me in ('lib', 'main'):
                continue
            text = open(path).read()
            # drop comments and test modules: only production imports count
            text = re.sub(r'//[^\n]*', '', text)
            cut = text.find('#[cfg(test)]')
            if cut >= 0:
                text = text[:cut]
            refs = set(re.findall(r'\bcrate::([a-z_][a-z0-9_]*)', text))
            # `use crate::{a, b::c}` groups
            for group in re.findall(r'\bcrate::\{([^}]*)\}', text, re.S):
                refs |= set(re.findall(r'(?:^|,)\s*([a-z_][a-z0-9_]*)', group))
            if root == src:
                refs |= set(re.findall(r'\bsuper::([a-z_][a-z0-9_]*)', text))
            graph.setdefault(me, set()).update(r for r in refs if r != me)
    return graph

def cycles(graph):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1
        stack.append(v); on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in list(graph):
        if v not in index:
            visit(v)
    return out

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
bad = 0
for crate in sorted(os.listdir(root)) + ['.']:
    src = os.path.join(root, crate, 'src')
    if not os.path.isdir(src) or crate in ('target',):
        continue
    for comp in cycles(crate_graph(src)):
        bad += 1
        print(f'{crate}: modules import each other: {" <-> ".join(comp)}')
    # nested module folders (webdav/, jobs/) are crates of their own here
    for sub in sorted(os.listdir(src)):
        d = os.path.join(src, sub)
        if os.path.isdir(d):
            g = {}
            for f in os.listdir(d):
                if f.endswith('.rs') and f != 'mod.rs':
                    text = re.sub(r'//[^\n]*', '', open(os.path.join(d, f)).read())
                    cut = text.find('#[cfg(test)]')
                    text = text[:cut] if cut >= 0 else text
                    refs = set(re.findall(r'\b(?:super|crate::' + sub + r')::([a-z_][a-z0-9_]*)', text))
                    for group in re.findall(r'\b(?:super|crate::' + sub + r')::\{([^}]*)\}', text, re.S):
                        refs |= set(re.findall(r'(?:^|,)\s*([a-z_][a-z0-9_]*)', group))
                    g[f[:-3]] = {r for r in refs if r != f[:-3]}
            for comp in cycles(g):
                bad += 1
                print(f'{crate}/{sub}: modules import each other: {" <-> ".join(comp)}')
sys.exit(1 if bad else 0)
