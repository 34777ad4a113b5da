import {
  bytesPair,
  cores,
  count,
  countdown,
  duration,
  gb,
  percent,
  temperature,
  utilization
} from '../format';
import { plainTrans, strfmt, Trans } from '../trans';
import { GIB } from './fixtures';

const trans = plainTrans;

describe('strfmt and plainTrans', () => {
  it('fills numbered placeholders in any order and keeps %% as a percent sign', () => {
    expect(strfmt('%2 of %1', 'a', 'b')).toBe('b of a');
    expect(strfmt('%1%% done', 40)).toBe('40% done');
    expect(strfmt('%1 and %3', 'x')).toBe('x and %3');
  });

  it('chooses the plural by n and passes n as %1, as JupyterLab does', () => {
    expect(trans._n('%1 process', '%1 processes', 1)).toBe('1 process');
    expect(trans._n('%1 process', '%1 processes', 3)).toBe('3 processes');
  });
});

describe('figures', () => {
  it('shows GB with one decimal below 10 and none above', () => {
    expect(gb(0.5 * GIB)).toBe('0.5');
    expect(gb(12.4 * GIB)).toBe('12');
    expect(gb(null)).toBe('?');
    expect(gb(undefined)).toBe('?');
  });

  it('pairs used and total, and says when there is no limit', () => {
    expect(bytesPair(12 * GIB, 80 * GIB, trans)).toBe('12/80 GB');
    expect(bytesPair(GIB / 2, null, trans)).toBe('0.5 GB (no limit)');
  });

  it('counts cores with a plural that follows the limit', () => {
    expect(cores(0.25, 2, trans)).toBe('0.25 of 2 cores');
    expect(cores(0.25, 1, trans)).toBe('0.25 of 1 core');
    expect(cores(null, 2, trans)).toBe('? of 2 cores');
    expect(cores(1.5, null, trans)).toBe('1.50 cores (no limit)');
  });

  it('counts processes against their limit', () => {
    expect(count(12, 512, trans)).toBe('12 of 512');
    expect(count(null, null, trans)).toBe('? (no limit)');
  });

  it('shows durations in their two largest units', () => {
    expect(duration(59, trans)).toBe('0m 59s');
    expect(duration(3 * 3600 + 5 * 60 + 7, trans)).toBe('3h 5m');
    expect(duration(2 * 86400 + 3600, trans)).toBe('2d 1h');
    expect(duration(null, trans)).toBe('?');
  });

  it('says n/a for a MIG slice instead of a made-up utilisation', () => {
    expect(utilization({ utilization_pct: 0 }, trans)).toBe('0%');
    expect(utilization({ utilization_pct: 73 }, trans)).toBe('73%');
    expect(
      utilization({ utilization_pct: null, mig_profile: '1g.10gb' }, trans)
    ).toBe('n/a (MIG)');
    expect(utilization({ utilization_pct: null }, trans)).toBe('?');
  });

  it('shows temperatures in °C', () => {
    expect(temperature(61, trans)).toBe('61 °C');
    expect(temperature(null, trans)).toBe('?');
  });

  it('computes a percentage only when both figures are known and the total is positive', () => {
    expect(percent(20, 80)).toBe(25);
    expect(percent(20, 0)).toBeNull();
    expect(percent(null, 80)).toBeNull();
  });
});

describe('countdown', () => {
  it('rounds down to whole minutes: never more time than there is', () => {
    expect(countdown(8 * 60 + 59, trans)).toBe('8 min');
    expect(countdown(65 * 60, trans)).toBe('1 h 5 min');
    expect(countdown(120 * 60, trans)).toBe('2 h');
    expect(countdown(59, trans)).toBe('less than a minute');
    expect(countdown(59, trans, true)).toBe('<1 min');
    expect(countdown(-5, trans)).toBe('less than a minute');
    expect(countdown(Number.NaN, trans, true)).toBe('<1 min');
  });
});

describe('translation', () => {
  it('sends every word through the bundle it is given', () => {
    const seen: string[] = [];
    const spy: Trans = {
      __: (msgid: string, ...args: any[]) => {
        seen.push(msgid);
        return strfmt(`«${msgid}»`, ...args);
      },
      _n: (one: string, many: string, n: number, ...args: any[]) => {
        seen.push(one);
        return strfmt(`«${n === 1 ? one : many}»`, n, ...args);
      }
    };
    expect(bytesPair(GIB, null, spy)).toBe('«1.0 GB (no limit)»');
    expect(cores(1, 4, spy)).toBe('«1.00 of 4 cores»');
    expect(countdown(10, spy)).toBe('«less than a minute»');
    expect(seen).toEqual([
      '%1 GB (no limit)',
      '%2 of %1 core',
      'less than a minute'
    ]);
  });
});
