/**
 * Whether `work` settles within `ms` (true) or the time runs out first (false); `work` goes on
 * either way. For "wait for it, but not longer than": the last log lines before an outcome, a Job
 * deletion before reporting, a log stream's end.
 */
export async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work.then(
        () => true,
        () => true,
      ),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
