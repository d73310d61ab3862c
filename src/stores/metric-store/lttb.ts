/**
 * Largest-triangle-three-buckets downsampling (Steinarsson 2013) over points sorted by `step`.
 * Returns at most `n` of the given points (the same objects, in order), always the first and the
 * last (for n >= 2); with n >= points.length a copy of all of them.
 */
export function lttb<P extends { step: number; value: number }>(points: readonly P[], n: number): P[] {
  const len = points.length;
  if (n >= len) return points.slice();
  if (n < 1) return [];
  if (n === 1) return [points[0]];
  if (n === 2) return [points[0], points[len - 1]];
  const out: P[] = [points[0]];
  // The n - 2 middle buckets split points[1 .. len - 2] evenly.
  const every = (len - 2) / (n - 2);
  let a = 0; // index of the point picked in the previous bucket
  for (let b = 0; b < n - 2; b++) {
    // Average of the next bucket (the last point for the final bucket).
    const nextStart = Math.floor((b + 1) * every) + 1;
    const nextEnd = Math.min(Math.floor((b + 2) * every) + 1, len);
    let avgX = 0;
    let avgY = 0;
    if (b === n - 3) {
      avgX = points[len - 1].step;
      avgY = points[len - 1].value;
    } else {
      for (let j = nextStart; j < nextEnd; j++) {
        avgX += points[j].step;
        avgY += points[j].value;
      }
      avgX /= nextEnd - nextStart;
      avgY /= nextEnd - nextStart;
    }
    const start = Math.floor(b * every) + 1;
    const end = Math.floor((b + 1) * every) + 1;
    const ax = points[a].step;
    const ay = points[a].value;
    let best = start;
    let bestArea = -1;
    for (let j = start; j < end; j++) {
      const area = Math.abs((ax - avgX) * (points[j].value - ay) - (ax - points[j].step) * (avgY - ay));
      if (area > bestArea) {
        bestArea = area;
        best = j;
      }
    }
    out.push(points[best]);
    a = best;
  }
  out.push(points[len - 1]);
  return out;
}
