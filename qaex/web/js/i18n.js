// Chinese and English labels. Elements carry data-i18n="key" (text) or data-i18n-title /
// data-i18n-placeholder; t(key) answers the label in the current language.
const LABELS = {
  brand: ["qaex 模拟期货交易所", "qaex simulated futures"],
  login: ["登录", "Log in"],
  logout: ["退出", "Log out"],
  open_account: ["开户", "Open account"],
  user_id: ["用户名", "User id"],
  password: ["密码", "Password"],
  login_hint: ["没有账户? 填写用户名和密码后点击开户。", "No account yet? Fill in a user id and password, then Open account."],
  market: ["行情", "Market"],
  symbol: ["合约", "Contract"],
  name: ["名称", "Name"],
  last: ["最新价", "Last"],
  change: ["涨跌幅", "Chg %"],
  bid: ["买价", "Bid"],
  ask: ["卖价", "Ask"],
  bid_vol: ["买量", "Bid vol"],
  ask_vol: ["卖量", "Ask vol"],
  volume: ["成交量", "Volume"],
  open_interest: ["持仓量", "Open int."],
  upper_limit: ["涨停", "Upper"],
  lower_limit: ["跌停", "Lower"],
  depth: ["五档盘口", "Depth (5 levels)"],
  mine: ["我的", "Mine"],
  one_click: ["一键下单", "One-click trading"],
  one_click_hint: ["开启后点击买量/卖量列直接以该价下限价单", "When on, a click on a bid/ask volume cell sends a limit order at that price"],
  order_entry: ["下单", "Order entry"],
  buy: ["买入", "Buy"],
  sell: ["卖出", "Sell"],
  open: ["开仓", "Open"],
  close: ["平仓", "Close"],
  close_today: ["平今", "Close today"],
  limit: ["限价", "Limit"],
  fak: ["FAK", "FAK"],
  fok: ["FOK", "FOK"],
  market_order: ["市价", "Market"],
  price: ["价格", "Price"],
  lots: ["手数", "Lots"],
  est_margin: ["预估保证金", "Est. margin"],
  est_commission: ["预估手续费", "Est. commission"],
  send: ["下单", "Send"],
  orders: ["委托", "Orders"],
  trades: ["成交", "Trades"],
  positions: ["持仓", "Positions"],
  account: ["资金", "Account"],
  transfer: ["银期转账", "Transfers"],
  time: ["时间", "Time"],
  order_id: ["委托号", "Order id"],
  direction: ["方向", "Side"],
  offset: ["开平", "Offset"],
  filled: ["成交", "Filled"],
  status: ["状态", "Status"],
  message: ["信息", "Message"],
  cancel: ["撤单", "Cancel"],
  cancel_all: ["全部撤单", "Cancel all"],
  trade_price: ["成交价", "Price"],
  commission: ["手续费", "Commission"],
  long: ["多", "Long"],
  short: ["空", "Short"],
  today: ["今仓", "Today"],
  yesterday: ["昨仓", "Yesterday"],
  open_price: ["开仓均价", "Open price"],
  float_profit: ["浮动盈亏", "Float P&L"],
  position_profit: ["持仓盈亏", "Position P&L"],
  margin: ["保证金", "Margin"],
  close_market: ["市价平仓", "Close at market"],
  balance: ["权益", "Balance"],
  available: ["可用资金", "Available"],
  risk_ratio: ["风险度", "Risk ratio"],
  static_balance: ["静态权益", "Static balance"],
  close_profit: ["平仓盈亏", "Close P&L"],
  deposit: ["入金", "Deposit"],
  withdraw: ["出金", "Withdraw"],
  frozen_margin: ["冻结保证金", "Frozen margin"],
  amount: ["金额", "Amount"],
  change_password: ["修改密码", "Change password"],
  old_password: ["原密码", "Old password"],
  new_password: ["新密码", "New password"],
  chart: ["K线", "Chart"],
  ticks: ["分时(逐笔)", "Ticks"],
  history_more: ["加载更早", "Earlier"],
  live: ["实时", "Live"],
  no_data: ["暂无数据", "No data yet"],
  connecting: ["连接中", "Connecting"],
  connected: ["已连接", "Connected"],
  disconnected: ["已断开, 重连中", "Disconnected, reconnecting"],
  last_update: ["更新于", "updated"],
  ago: ["前", "ago"],
  not_logged_in: ["未登录", "Not logged in"],
  not_enough_position: ["可平仓位不足", "Not enough position to close"],
  bad_volume: ["手数无效", "Invalid volume"],
  bad_price: ["价格无效", "Invalid price"],
  no_symbol: ["请选择合约", "Choose a contract"],
  state_ALIVE: ["未成交", "Working"],
  state_PENDING: ["待报", "Pending"],
  state_FILLED: ["全部成交", "Filled"],
  state_CANCELLED: ["已撤单", "Cancelled"],
  state_PARTIAL: ["部成部撤", "Part-filled"],
  state_REJECTED: ["已拒绝", "Rejected"],
  dir_BUY: ["买", "Buy"],
  dir_SELL: ["卖", "Sell"],
  off_OPEN: ["开", "Open"],
  off_CLOSE: ["平", "Close"],
  off_CLOSETODAY: ["平今", "Close today"],
  account_opened: ["开户成功, 正在登录", "Account opened, logging in"],
  suspended: ["停牌", "Suspended"],
  admin: ["管理", "Admin"],
  terminal: ["交易终端", "Terminal"],
  lang: ["English", "中文"],
  // admin page
  admin_token: ["管理员令牌", "Admin token"],
  use_token: ["使用", "Use"],
  contracts: ["合约管理", "Contracts"],
  suspend: ["停牌", "Suspend"],
  resume: ["复牌", "Resume"],
  create_contract: ["新增/修改合约", "Create or update a contract"],
  create: ["提交", "Submit"],
  settlement: ["结算", "Settlement"],
  settle: ["执行结算", "Settle"],
  settlement_price: ["结算价", "Settlement price"],
  users: ["用户 (按风险度排序)", "Users (by risk ratio)"],
  admin_deposit: ["入金", "Deposit"],
  metrics: ["运行指标", "Metrics"],
  refresh: ["刷新", "Refresh"],
  done: ["完成", "Done"],
  exchange: ["交易所", "Exchange"],
  price_tick: ["最小变动价位", "Price tick"],
  volume_multiple: ["合约乘数", "Multiplier"],
  pre_settlement: ["昨结算", "Pre-settlement"],
  trading_day: ["交易日", "Trading day"],
};

let language = "zh";
try {
  language = localStorage.getItem("qaex.lang") || "zh";
} catch (error) {
  language = "zh";
}

export function lang() {
  return language;
}

export function t(key) {
  const entry = LABELS[key];
  if (!entry) return key;
  return entry[language === "en" ? 1 : 0];
}

export function applyLabels(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  document.documentElement.lang = language === "en" ? "en" : "zh-CN";
}

export function toggleLanguage() {
  language = language === "en" ? "zh" : "en";
  try {
    localStorage.setItem("qaex.lang", language);
  } catch (error) {
    // storage may be off: the choice lasts for the page
  }
  applyLabels();
}
