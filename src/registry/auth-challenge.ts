/** One `WWW-Authenticate` challenge: its scheme (lowercase) and parameters. */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parse `Bearer realm="https://auth",service="reg",scope="repository:a:pull", Basic realm="x"` into
 * challenges. Quoted values may hold commas and backslash escapes.
 */
export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  const text = Array.isArray(header) ? header.join(', ') : (header ?? '');
  const out: Challenge[] = [];
  let i = 0;
  const skipSpace = () => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === ',')) i++;
  };
  const token = () => {
    const m = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+/.exec(text.slice(i));
    if (!m) return '';
    i += m[0].length;
    return m[0];
  };
  while (i < text.length) {
    skipSpace();
    const scheme = token();
    if (scheme === '') break;
    const params: Record<string, string> = {};
    for (;;) {
      const save = i;
      skipSpace();
      const key = token();
      if (key === '' || text[i] !== '=') {
        i = save; // next challenge's scheme
        break;
      }
      i++;
      let value = '';
      if (text[i] === '"') {
        i++;
        while (i < text.length && text[i] !== '"') {
          if (text[i] === '\\' && i + 1 < text.length) i++;
          value += text[i++];
        }
        i++;
      } else {
        value = token();
      }
      params[key.toLowerCase()] = value;
    }
    out.push({ scheme: scheme.toLowerCase(), params });
  }
  return out;
}
